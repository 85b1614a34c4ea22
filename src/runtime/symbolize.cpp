// A minimal ELF64 symbol-table reader. Parsed once, lazily, on the first dump.
#include "symbolize.hpp"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

namespace sluice::detail {
namespace {

struct symbol {
  std::uintptr_t start;
  std::uintptr_t size;
  std::string name;
};

struct symbol_table {
  std::vector<symbol> symbols;  // sorted by start
  std::uintptr_t bias = 0;      // load address of the executable (PIE)
};

int find_bias(dl_phdr_info* info, std::size_t, void* data) {
  // The first object reported is the main executable.
  *static_cast<std::uintptr_t*>(data) = info->dlpi_addr;
  return 1;
}

void load(symbol_table& table) {
  dl_iterate_phdr(find_bias, &table.bias);
  const int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
    close(fd);
    return;
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return;
  const auto* base = static_cast<const unsigned char*>(map);
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  const bool ok = std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 &&
                  eh->e_ident[EI_CLASS] == ELFCLASS64 && eh->e_shoff != 0 &&
                  eh->e_shoff + std::size_t{eh->e_shnum} * sizeof(Elf64_Shdr) <= size;
  if (ok) {
    const auto* sh = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
    for (unsigned i = 0; i < eh->e_shnum; ++i) {
      if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
      const Elf64_Shdr& strtab = sh[sh[i].sh_link];
      if (sh[i].sh_offset + sh[i].sh_size > size || strtab.sh_offset + strtab.sh_size > size) {
        continue;
      }
      const auto* syms = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
      const std::size_t count = sh[i].sh_size / sizeof(Elf64_Sym);
      const char* strings = reinterpret_cast<const char*>(base + strtab.sh_offset);
      for (std::size_t k = 0; k < count; ++k) {
        if (ELF64_ST_TYPE(syms[k].st_info) != STT_FUNC || syms[k].st_value == 0) continue;
        if (syms[k].st_name >= strtab.sh_size) continue;
        table.symbols.push_back({static_cast<std::uintptr_t>(syms[k].st_value),
                                 static_cast<std::uintptr_t>(syms[k].st_size),
                                 std::string(strings + syms[k].st_name)});
      }
    }
  }
  munmap(map, size);
  std::sort(table.symbols.begin(), table.symbols.end(),
            [](const symbol& a, const symbol& b) { return a.start < b.start; });
}

std::string demangle(const std::string& name) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(
      abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status), std::free);
  return status == 0 && out ? std::string(out.get()) : name;
}

}  // namespace

std::string symbolize(const void* address) {
  if (address == nullptr) return {};
  static symbol_table table;
  static std::once_flag once;
  std::call_once(once, [] { load(table); });
  const auto addr = reinterpret_cast<std::uintptr_t>(address) - table.bias;
  auto it = std::upper_bound(table.symbols.begin(), table.symbols.end(), addr,
                             [](std::uintptr_t a, const symbol& s) { return a < s.start; });
  if (it != table.symbols.begin()) {
    --it;
    if (addr < it->start + std::max<std::uintptr_t>(it->size, 1)) return demangle(it->name);
  }
  Dl_info info{};
  if (dladdr(address, &info) != 0 && info.dli_sname != nullptr) return demangle(info.dli_sname);
  return {};
}

}  // namespace sluice::detail

// Internal: maps a code address to a demangled function name, for task dumps.
#pragma once

#include <string>

namespace sluice::detail {

// The name of the function containing `address`, or "" when unknown. Reads the
// executable's ELF .symtab (which, unlike dladdr, knows internal-linkage
// functions such as those in anonymous namespaces), then falls back to dladdr.
std::string symbolize(const void* address);

}  // namespace sluice::detail

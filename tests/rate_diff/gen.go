// Command gen runs random call sequences on the real golang.org/x/time/rate
// limiter and writes every call and Go's answer to a trace, which
// tests/rate_test.cpp (RateDiff.MatchesGoLimiter) replays on
// sluice::rate::limiter, comparing every result exactly.
//
//	gen [-seeds N] [-ops M] > trace.txt
//
// Trace format, one record per line, fields separated by spaces. Times are
// int64 nanosecond offsets from a base time; floats are the hex of their
// IEEE-754 bits (Go's Inf is the bits of math.MaxFloat64); every limiter
// operation ends with the state it leaves, "tokens-at-t burst limit":
//
//	seed <seed> <limit> <burst>            a new limiter: NewLimiter(limit, burst)
//	A <t> <n> <ok> <state>                 AllowN(t, n)
//	R <t> <n> <slot> <ok> <delay> <state>  ReserveN(t, n), kept in slot; delay = DelayFrom(t)
//	D <slot> <t> <delay> <state>           DelayFrom(t) of the reservation in slot
//	C <slot> <t> <state>                   CancelAt(t) of the reservation in slot
//	L <t> <limit> <state>                  SetLimitAt(t, limit)
//	B <t> <burst> <state>                  SetBurstAt(t, burst)
//	T <t> <state>                          TokensAt(t) (the state is the answer)
//	E <interval> <limit>                   Every(interval)
//	end <ops>                              the seed's sequence is over
//
// The generator avoids one region on purpose: a ReserveN/AllowN whose wait,
// 1e9 × deficit / limit, reaches 2^63 ns. The Go spec leaves that
// float-to-int conversion to the platform (amd64 gives math.MinInt64, arm64
// saturates); sluice saturates, and its own unit tests cover it. Bursts and n
// stay within int32, sluice's int.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"os"
	"time"

	"golang.org/x/time/rate"
)

const slots = 12

var base = time.Unix(1_000_000_000, 0)

type gen struct {
	rng   *rand.Rand
	w     *bufio.Writer
	lim   *rate.Limiter
	res   [slots]*rate.Reservation
	nres  int
	cur   int64 // the time cursor, as an offset from base
	ops   int // records written for this seed
	skips int // operations not run (see overflows)
}

func bits(f float64) string { return fmt.Sprintf("%016x", math.Float64bits(f)) }

func at(off int64) time.Time { return base.Add(time.Duration(off)) }

func (g *gen) state(t int64) string {
	return fmt.Sprintf("%s %d %s", bits(g.lim.TokensAt(at(t))), g.lim.Burst(), bits(float64(g.lim.Limit())))
}

func logUniform(rng *rand.Rand, lo, hi float64) float64 {
	return math.Pow(10, lo+rng.Float64()*(hi-lo))
}

func (g *gen) duration() time.Duration {
	switch g.rng.Intn(8) {
	case 0:
		return 0
	case 1:
		return -time.Duration(g.rng.Int63n(int64(time.Hour)))
	case 2:
		return time.Duration(1 + g.rng.Int63n(1000))
	case 3:
		return time.Duration(math.MaxInt64 - g.rng.Int63n(1000))
	case 4:
		return time.Duration(math.MinInt64 + g.rng.Int63n(1000))
	default:
		return time.Duration(logUniform(g.rng, 0, 15))
	}
}

func (g *gen) limit() rate.Limit {
	switch g.rng.Intn(14) {
	case 0, 1:
		return 0
	case 2, 3:
		return rate.Inf
	case 4:
		return rate.Limit(logUniform(g.rng, -12, -3)) // tiny
	case 5:
		return rate.Limit(logUniform(g.rng, 6, 16)) // huge
	case 6:
		extremes := []float64{math.SmallestNonzeroFloat64, 1e-300, 1e300, math.MaxFloat64 / 2,
			math.Nextafter(math.MaxFloat64, 0), 1e18, 1e-18}
		return rate.Limit(extremes[g.rng.Intn(len(extremes))])
	case 7:
		return rate.Every(g.duration())
	case 8:
		return rate.Limit(1 + g.rng.Intn(1000))
	default:
		return rate.Limit(logUniform(g.rng, -2, 4))
	}
}

func (g *gen) burst() int {
	switch g.rng.Intn(10) {
	case 0, 1:
		return 0
	case 2, 3:
		return 1
	case 4:
		return math.MaxInt32
	case 5:
		return int(logUniform(g.rng, 3, 9))
	case 6:
		return 10 + g.rng.Intn(1000)
	default:
		return 2 + g.rng.Intn(9)
	}
}

func (g *gen) n() int {
	b := g.lim.Burst()
	plus := func(k int) int {
		if b > math.MaxInt32-k {
			return math.MaxInt32
		}
		return b + k
	}
	switch g.rng.Intn(10) {
	case 0:
		return 0
	case 1:
		return b
	case 2:
		return plus(1)
	case 3:
		return g.rng.Intn(plus(3))
	case 4:
		return math.MaxInt32
	default:
		return 1 + g.rng.Intn(5)
	}
}

// next moves the time cursor: mostly forward on the limiter's own time scale,
// sometimes not at all, backwards, far away, or to the ends of the int64 range.
func (g *gen) time() int64 {
	scale := float64(time.Second)
	if l := float64(g.lim.Limit()); l > 0 && l < math.MaxFloat64 {
		scale = float64(time.Second) / l
	}
	scale = math.Max(1, math.Min(scale, 1e15))
	step := func(k float64) int64 { return int64(g.rng.Float64() * scale * k) }
	c := g.cur
	switch r := g.rng.Intn(100); {
	case r < 40:
		c += step(2)
	case r < 55:
	case r < 65:
		c -= step(3)
	case r < 72:
		c += g.rng.Int63n(2e15) - 1e15
	case r < 75:
		if g.rng.Intn(2) == 0 {
			c = math.MaxInt64 - 5e15 - g.rng.Int63n(1e15)
		} else {
			c = math.MinInt64 + 5e15 + g.rng.Int63n(1e15)
		}
	default:
		c += g.rng.Int63n(11e9) - 1e9
	}
	const edge = math.MaxInt64 - 4e15 // keeps every step below and sluice's time_point in range
	if c > edge || c < -edge {
		c = g.rng.Int63n(1e12)
	}
	g.cur = c
	return c
}

// overflows: would ReserveN(t, n) compute a wait of 2^63 ns or more (see the
// package comment)? The same operations as reserveN and durationFromTokens.
func (g *gen) overflows(t int64, n int) bool {
	l := g.lim.Limit()
	if l == rate.Inf || l <= 0 {
		return false
	}
	tokens := g.lim.TokensAt(at(t))
	tokens -= float64(n)
	if tokens >= 0 {
		return false
	}
	seconds := -tokens / float64(l)
	return float64(time.Second)*seconds >= 9223372036854775808.0
}

// emit writes one record of the trace.
func (g *gen) emit(format string, args ...any) {
	g.ops++
	fmt.Fprintf(g.w, format, args...)
}

func (g *gen) op() {
	switch r := g.rng.Intn(100); {
	case r < 30:
		t, n := g.time(), g.n()
		if g.overflows(t, n) {
			g.skips++
			break
		}
		ok := g.lim.AllowN(at(t), n)
		g.emit("A %d %d %t %s\n", t, n, ok, g.state(t))
	case r < 55:
		t, n := g.time(), g.n()
		if g.overflows(t, n) {
			g.skips++
			break
		}
		s := g.rng.Intn(slots)
		r := g.lim.ReserveN(at(t), n)
		g.res[s] = r
		g.emit("R %d %d %d %t %d %s\n", t, n, s, r.OK(), int64(r.DelayFrom(at(t))), g.state(t))
	case r < 68:
		s := g.rng.Intn(slots)
		if g.res[s] == nil {
			break
		}
		// Cancel mostly right away (before the time to act), sometimes later.
		t := g.cur
		if g.rng.Intn(3) == 0 {
			t = g.time()
		}
		g.res[s].CancelAt(at(t))
		g.emit("C %d %d %s\n", s, t, g.state(t))
	case r < 75:
		s := g.rng.Intn(slots)
		if g.res[s] == nil {
			break
		}
		t := g.time()
		g.emit("D %d %d %d %s\n", s, t, int64(g.res[s].DelayFrom(at(t))), g.state(t))
	case r < 82:
		t, l := g.time(), g.limit()
		g.lim.SetLimitAt(at(t), l)
		g.emit("L %d %s %s\n", t, bits(float64(l)), g.state(t))
	case r < 88:
		t, b := g.time(), g.burst()
		g.lim.SetBurstAt(at(t), b)
		g.emit("B %d %d %s\n", t, b, g.state(t))
	case r < 96:
		t := g.time()
		g.emit("T %d %s\n", t, g.state(t))
	default:
		d := g.duration()
		g.emit("E %d %s\n", int64(d), bits(float64(rate.Every(d))))
	}
}

func main() {
	seeds := flag.Int("seeds", 2000, "number of random sequences")
	ops := flag.Int("ops", 200, "operations per sequence")
	flag.Parse()
	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	defer w.Flush()
	fmt.Fprintf(w, "# golang.org/x/time/rate differential trace: %d seeds x %d ops\n", *seeds, *ops)
	total, skips := 0, 0
	for seed := 1; seed <= *seeds; seed++ {
		g := &gen{rng: rand.New(rand.NewSource(int64(seed))), w: w}
		g.cur = g.rng.Int63n(1e12) - 5e11
		l, b := g.limit(), g.burst()
		g.lim = rate.NewLimiter(l, b)
		fmt.Fprintf(w, "seed %d %s %d\n", seed, bits(float64(l)), b)
		for g.ops < *ops {
			g.op()
		}
		fmt.Fprintf(w, "end %d\n", g.ops)
		total += g.ops
		skips += g.skips
	}
	fmt.Fprintf(os.Stderr, "rate_diff: %d seeds, %d ops (%d skipped: wait >= 2^63 ns)\n", *seeds, total, skips)
}

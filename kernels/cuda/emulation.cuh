// A small CUDA emulation for running the fastmom kernels on the host (g++ -std=c++20).
//
// Included by common.cuh when FASTMOM_EMULATION is defined; never seen by nvcc.
// fastmom/cuda_emulation.py compiles the kernel sources against it into a shared
// library and launches kernels through ctypes over their real grid and block shapes.
//
// Execution model: the blocks of a grid run one after another. The threads of a block
// are fibers (ucontext) on one OS thread; each runs until it reaches __syncthreads()
// or returns, then the next runs. When every thread waits at the barrier, the block's
// barrier epoch advances and all continue. Threads that return while others wait at a
// barrier are reported (a divergent barrier is undefined behaviour on a GPU).
//
// Checking:
//  * global arrays are gptr<T>: every access is bounds-checked against the array the
//    host passed (out-of-range reads and writes are errors; 16-byte vector accesses
//    must also be 16-byte aligned, as the hardware requires);
//  * shared memory is a Region with a shadow word per 4 bytes recording the last
//    writer and reader thread and their barrier epoch: a read of a word written by
//    another thread, or a write of a word read or written by another thread, in the
//    same epoch (no __syncthreads between them) is a race; reading a word nobody wrote
//    is an error too (reported at the next barrier, so that a write by another thread
//    later in the same epoch is reported as the race it is); the 48 KiB per-block
//    limit is enforced;
//  * launch shapes: at most 1024 threads per block, block.z <= 64, grid.y/z <= 65535.
// The first error stops the launch; its message (with block and thread indices) goes
// back to Python, which raises it.
//
// Memory statistics (opt-in: compiled only with -DFM_EMU_MEMSTATS, which
// cuda_emulation.build(memstats=True) adds, so the checking build stays as fast as it
// was): every global and shared access is recorded with its call site (the return
// address of a never-inlined recorder called from always-inlined accessors, i.e. an
// address in the kernel's code). The accesses of the 32 threads of a warp (consecutive
// linear thread indices, x fastest) in one barrier phase are grouped as the hardware
// issues them: the k-th execution of a call site by each lane is one warp instruction.
// Per site: global bytes requested against 32-byte sectors touched (addresses as a
// device would see them: each argument's allocation 256-byte aligned, as cudaMalloc
// and CuPy's pool give), and for shared memory the wavefronts of each warp access
// (the most distinct 4-byte words any of the 32 banks must deliver; a broadcast of one
// word is free), so replays = wavefronts - 1. Loads and stores are not told apart (a
// global element is a T&), caches are not modelled (the launch's distinct sectors are
// counted as its footprint instead), and lanes that diverge into different iterations
// of a loop are grouped by iteration count, which is how the kernels here diverge.
//
// Limits: warps are not scheduled as such (no shuffles or warp-synchronous code: the
// kernels use none; the statistics above only group accesses), atomics are not
// provided (unused), races through global memory and between blocks are not detected,
// and floating point is the host's (expf, tanhf).
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#ifdef FM_EMU_MEMSTATS
#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <unordered_map>
#include <unordered_set>
#endif

#include <cmath>
#include <cstdio>
#include <memory>
#include <new>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace fm_emu {

struct Abort {};  // unwinds a fiber once an error has been recorded

void fail(const std::string& msg);

#ifdef FM_EMU_MEMSTATS
// accessors must inline into the kernel so that the recorder's return address names
// the kernel's own access site
#define FM_EMU_ACCESSOR __attribute__((always_inline)) inline
enum MemKind : uint8_t { GLOBAL = 0, SHARED = 1 };
__attribute__((noinline)) void record(MemKind kind, uint64_t addr, uint32_t size);
#else
#define FM_EMU_ACCESSOR inline
#endif

// -- global memory ------------------------------------------------------------------

template <class T>
struct gptr {
    T* base = nullptr;
    int64_t n = 0;    // elements in the host array
    int64_t off = 0;  // element offset of this pointer from base
    int arg = -1;     // kernel argument number, for messages
    uint64_t dev = 0;  // the address a device would give base (memory statistics)

    gptr() = default;
    gptr(T* b, int64_t count, int64_t o, int a, uint64_t d = 0) : base(b), n(count), off(o), arg(a), dev(d) {}
    template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
    gptr(const gptr<U>& o) : base(o.base), n(o.n), off(o.off), arg(o.arg), dev(o.dev) {}

    FM_EMU_ACCESSOR T& at(int64_t i, int64_t count = 1) const {
        int64_t k = off + i;
        if (base == nullptr || k < 0 || k + count > n) {
            char buf[200];
            snprintf(buf, sizeof buf,
                     "out-of-bounds global memory access: element %lld of kernel argument %d "
                     "(an array of %lld elements)",
                     (long long)k, arg, (long long)n);
            fail(buf);
        }
#ifdef FM_EMU_MEMSTATS
        record(GLOBAL, dev + uint64_t(k) * sizeof(T), uint32_t(count * sizeof(T)));
#endif
        return base[k];
    }
    template <class I>
    FM_EMU_ACCESSOR T& operator[](I i) const { return at(static_cast<int64_t>(i)); }
    FM_EMU_ACCESSOR T& operator*() const { return at(0); }
    template <class I>
    gptr operator+(I k) const { return gptr(base, n, off + static_cast<int64_t>(k), arg, dev); }
    template <class I>
    gptr operator-(I k) const { return gptr(base, n, off - static_cast<int64_t>(k), arg, dev); }
};

// -- shared memory and the per-block state ---------------------------------------------

struct Shadow {
    uint32_t write_epoch = 0, writer = 0, read_epoch = 0, reader = 0;
};
constexpr uint32_t MANY = 0xffffffffu;

struct Region {
    std::string name;
    size_t bytes;
    uint64_t base = 0;  // byte address in the block's shared memory (banks)
    std::unique_ptr<uint64_t[]> store;  // 8-byte aligned storage
    std::vector<Shadow> shadow;         // one per 4-byte word
    Region(std::string nm, size_t b)
        : name(std::move(nm)), bytes(b), store(new uint64_t[(b + 15) / 8 + 1]), shadow((b + 3) / 4) {
        memset(store.get(), 0xff, ((b + 15) / 8 + 1) * 8);  // NaN/garbage, like fresh shared memory
    }
    unsigned char* data() { return reinterpret_cast<unsigned char*>(store.get()); }
    void on_read(int64_t off, size_t size);
    void on_write(int64_t off, size_t size);
};

enum FiberState { READY, AT_BARRIER, DONE };

struct Fiber {
    ucontext_t ctx;
    FiberState state = READY;
    dim3 idx;
};

struct State {
    dim3 grid, block, block_idx;
    size_t dyn_bytes = 0, shared_bytes = 0;
    uint32_t epoch = 1;
    std::vector<Fiber> fibers;
    unsigned cur = 0;
    ucontext_t sched;
    std::vector<std::pair<const void*, std::unique_ptr<Region>>> regions;
    Region* dyn = nullptr;
    void (*body)(State*) = nullptr;
    void* body_arg = nullptr;
    bool failed = false;
    std::string error;
    std::string uninit;  // first read of a never-written shared word in this epoch
};

inline thread_local State* g = nullptr;
constexpr size_t SHARED_LIMIT = 48 * 1024;

#ifdef FM_EMU_MEMSTATS
// -- memory statistics: warp accesses grouped and counted per call site ---------------

struct SiteTotals {  // one call site over a launch (the layout of cuda_emulation._MemSite)
    uint64_t pc;              // return address relative to the library's load address
    uint64_t kind;            // MemKind
    uint64_t warp_accesses;   // warp-level instructions (groups of lanes)
    uint64_t lane_accesses;   // thread-level accesses
    uint64_t bytes;           // bytes the lanes asked for (a broadcast counted per lane)
    uint64_t distinct_bytes;  // distinct bytes asked for by each warp access, summed
    uint64_t sectors;         // global: 32-byte sectors touched, summed over warp accesses
    uint64_t wavefronts;      // shared: max distinct words in one bank, summed (replays + 1)
};

struct MemRec {
    uint32_t site, occ;  // call site id; how many times this lane ran it before in this phase
    uint64_t addr;
    uint32_t size;
    uint8_t lane, kind;
};

struct MemStats {
    std::vector<SiteTotals> sites;
    std::unordered_map<uintptr_t, uint32_t> site_ids;
    std::vector<MemRec> pending;                   // the current warp's accesses in this phase
    std::array<std::vector<uint32_t>, 32> occ;     // per lane, per site: executions in this phase
    std::unordered_set<uint64_t> footprint;        // distinct global sectors of the launch
    std::vector<uint64_t> scratch;
};
inline thread_local MemStats mem;

inline uintptr_t lib_base() {
    static const uintptr_t base = [] {
        Dl_info info{};
        dladdr(reinterpret_cast<void*>(&lib_base), &info);
        return reinterpret_cast<uintptr_t>(info.dli_fbase);
    }();
    return base;
}

__attribute__((noinline)) void record(MemKind kind, uint64_t addr, uint32_t size) {
    const uintptr_t pc = reinterpret_cast<uintptr_t>(__builtin_return_address(0));
    auto [it, fresh] = mem.site_ids.try_emplace(pc, uint32_t(mem.sites.size()));
    if (fresh) mem.sites.push_back(SiteTotals{uint64_t(pc - lib_base()), kind, 0, 0, 0, 0, 0, 0});
    const uint32_t lane = g->cur % 32;
    std::vector<uint32_t>& occ = mem.occ[lane];
    if (occ.size() <= it->second) occ.resize(mem.sites.size(), 0);
    mem.pending.push_back(MemRec{it->second, occ[it->second]++, addr, size, uint8_t(lane), uint8_t(kind)});
}

// the bytes covered by [addr, addr + size) ranges, overlaps counted once
inline uint64_t distinct_bytes(std::vector<std::pair<uint64_t, uint64_t>>& r) {
    std::sort(r.begin(), r.end());
    uint64_t total = 0, end = 0;
    for (auto [a, b] : r) {
        if (a < end) a = end;
        if (b > a) total += b - a;
        if (b > end) end = b;
    }
    return total;
}

// Count the warp accesses of the warp just run: lanes that ran a site for the k-th time
// in this phase issued one instruction together, as on the hardware (threads of a warp
// that skip a branch simply do not take part).
inline void flush_warp() {
    auto& v = mem.pending;
    if (v.empty()) return;
    std::sort(v.begin(), v.end(), [](const MemRec& a, const MemRec& b) {
        return a.site != b.site ? a.site < b.site : a.occ < b.occ;
    });
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (size_t i = 0, j; i < v.size(); i = j) {
        for (j = i + 1; j < v.size() && v[j].site == v[i].site && v[j].occ == v[i].occ;) ++j;
        SiteTotals& t = mem.sites[v[i].site];
        ranges.clear();
        auto& ids = mem.scratch;
        ids.clear();
        for (size_t k = i; k < j; ++k) {
            t.bytes += v[k].size;
            ranges.emplace_back(v[k].addr, v[k].addr + v[k].size);
            // global: the 32-byte sectors; shared: the 4-byte words
            const unsigned shift = v[k].kind == GLOBAL ? 5 : 2;
            for (uint64_t u = v[k].addr >> shift; u <= (v[k].addr + v[k].size - 1) >> shift; ++u) ids.push_back(u);
        }
        std::sort(ids.begin(), ids.end());
        ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
        if (v[i].kind == GLOBAL) {
            t.sectors += ids.size();
            mem.footprint.insert(ids.begin(), ids.end());
        } else {
            std::array<uint32_t, 32> per_bank{};
            uint32_t most = 0;
            for (uint64_t w : ids) most = std::max(most, ++per_bank[w % 32]);
            t.wavefronts += most;
        }
        t.warp_accesses += 1;
        t.lane_accesses += j - i;
        t.distinct_bytes += distinct_bytes(ranges);
    }
    v.clear();
    for (auto& o : mem.occ) std::fill(o.begin(), o.end(), 0);
}
#endif

inline std::string where() {
    char buf[160];
    const dim3& t = g->fibers[g->cur].idx;
    snprintf(buf, sizeof buf, " [block (%u,%u,%u), thread (%u,%u,%u)]", g->block_idx.x, g->block_idx.y,
             g->block_idx.z, t.x, t.y, t.z);
    return buf;
}

inline void fail(const std::string& msg) {
    if (!g->failed) {
        g->failed = true;
        g->error = msg + where();
    }
    throw Abort{};
}

inline std::string word_name(const Region& r, int64_t word) {
    return "shared array '" + r.name + "' byte " + std::to_string(word * 4);
}

inline void Region::on_read(int64_t off, size_t size) {
    if (off < 0 || off + (int64_t)size > (int64_t)bytes)
        fail("out-of-bounds shared memory read: byte " + std::to_string(off) + " of shared array '" + name +
             "' (" + std::to_string(bytes) + " bytes)");
    const uint32_t me = g->cur, ep = g->epoch;
    for (int64_t w = off / 4; w < (off + (int64_t)size + 3) / 4; ++w) {
        Shadow& s = shadow[w];
        // reported at the barrier, unless a write by another thread in this epoch shows it as a race first
        if (s.write_epoch == 0 && g->uninit.empty()) g->uninit = "read of uninitialized " + word_name(*this, w) + where();
        if (s.write_epoch == ep && s.writer != me)
            fail("shared-memory race: thread " + std::to_string(me) + " reads " + word_name(*this, w) +
                 " written by thread " + std::to_string(s.writer) + " with no __syncthreads() in between");
        if (s.read_epoch != ep) {
            s.read_epoch = ep;
            s.reader = me;
        } else if (s.reader != me) {
            s.reader = MANY;
        }
    }
}

inline void Region::on_write(int64_t off, size_t size) {
    if (off < 0 || off + (int64_t)size > (int64_t)bytes)
        fail("out-of-bounds shared memory write: byte " + std::to_string(off) + " of shared array '" + name +
             "' (" + std::to_string(bytes) + " bytes)");
    const uint32_t me = g->cur, ep = g->epoch;
    for (int64_t w = off / 4; w < (off + (int64_t)size + 3) / 4; ++w) {
        Shadow& s = shadow[w];
        if (s.write_epoch == ep && s.writer != me)
            fail("shared-memory race: thread " + std::to_string(me) + " writes " + word_name(*this, w) +
                 " also written by thread " + std::to_string(s.writer) + " with no __syncthreads() in between");
        if (s.read_epoch == ep && s.reader != me)
            fail("shared-memory race: thread " + std::to_string(me) + " writes " + word_name(*this, w) +
                 " read by " + (s.reader == MANY ? std::string("other threads") : "thread " + std::to_string(s.reader)) +
                 " with no __syncthreads() in between");
        s.write_epoch = ep;
        s.writer = me;
    }
}

// a reference to one shared element: every conversion and assignment is checked
template <class T>
struct sref {
    Region* r;
    int64_t off;
    FM_EMU_ACCESSOR operator T() const {
        r->on_read(off, sizeof(T));
#ifdef FM_EMU_MEMSTATS
        record(SHARED, r->base + off, sizeof(T));
#endif
        T v;
        memcpy(&v, r->data() + off, sizeof(T));
        return v;
    }
    FM_EMU_ACCESSOR sref& operator=(T v) {
        r->on_write(off, sizeof(T));
#ifdef FM_EMU_MEMSTATS
        record(SHARED, r->base + off, sizeof(T));
#endif
        memcpy(r->data() + off, &v, sizeof(T));
        return *this;
    }
    FM_EMU_ACCESSOR sref& operator=(const sref& o) { return *this = static_cast<T>(o); }
    FM_EMU_ACCESSOR sref& operator+=(T v) { return *this = static_cast<T>(*this) + v; }
    FM_EMU_ACCESSOR sref& operator-=(T v) { return *this = static_cast<T>(*this) - v; }
    FM_EMU_ACCESSOR sref& operator*=(T v) { return *this = static_cast<T>(*this) * v; }
};

template <class T>
struct sptr {
    Region* r = nullptr;
    int64_t off = 0;  // bytes
    template <class I>
    FM_EMU_ACCESSOR sref<T> operator[](I i) const { return sref<T>{r, off + static_cast<int64_t>(i) * (int64_t)sizeof(T)}; }
    template <class I>
    sptr operator+(I k) const { return sptr{r, off + static_cast<int64_t>(k) * (int64_t)sizeof(T)}; }
};

// a shared pointer viewed as another element type (FM_SPTR_CAST): same region and byte
// offset; the GPU faults on a misaligned access, so this checks the alignment
template <class U, class T>
sptr<U> sptr_cast(const sptr<T>& p) {
    if (p.off % alignof(U) != 0)
        fail("misaligned shared pointer cast: byte " + std::to_string(p.off) + " of shared array '" + p.r->name +
             "' viewed as a " + std::to_string(alignof(U)) + "-byte aligned type");
    return sptr<U>{p.r, p.off};
}

inline Region* region(const void* tag, const char* name, size_t bytes) {
    for (auto& kv : g->regions)
        if (kv.first == tag) return kv.second.get();
    g->shared_bytes += bytes;
    if (g->shared_bytes > SHARED_LIMIT)
        fail("shared memory over the 48 KiB per-block limit: " + std::to_string(g->shared_bytes) + " bytes");
    g->regions.emplace_back(tag, std::make_unique<Region>(name, bytes));
    Region* r = g->regions.back().second.get();
    r->base = (g->shared_bytes - bytes + 15) / 16 * 16;  // laid out in order of first use, 16-byte aligned
    return r;
}

template <class T>
sptr<T> shared_static(const void* tag, size_t n, const char* name) {
    return sptr<T>{region(tag, name, n * sizeof(T)), 0};
}

template <class T>
sptr<T> shared_dynamic() {
    if (g->dyn == nullptr) {
        static const char tag = 0;
        g->dyn = region(&tag, "<dynamic>", g->dyn_bytes);
    }
    return sptr<T>{g->dyn, 0};
}

// -- barriers and fibers -----------------------------------------------------------

inline void syncthreads() {
    g->fibers[g->cur].state = AT_BARRIER;
    swapcontext(&g->fibers[g->cur].ctx, &g->sched);
}

inline void trampoline() {
    State* s = g;
    try {
        s->body(s);
    } catch (Abort&) {
    } catch (std::exception& e) {
        if (!s->failed) {
            s->failed = true;
            s->error = std::string("exception in kernel: ") + e.what();
        }
    }
    s->fibers[s->cur].state = DONE;
    // returning resumes uc_link, the scheduler
}

constexpr size_t STACK_BYTES = 256 * 1024;

inline std::vector<std::unique_ptr<char[]>>& stacks(size_t n) {
    static thread_local std::vector<std::unique_ptr<char[]>> pool;
    while (pool.size() < n) pool.emplace_back(new char[STACK_BYTES]);
    return pool;
}

// Run one block; returns false on error (message in s.error).
inline bool run_block(State& s) {
    const unsigned nt = s.block.x * s.block.y * s.block.z;
    auto& st = stacks(nt);
    s.fibers.assign(nt, Fiber{});
    s.regions.clear();
    s.dyn = nullptr;
    s.shared_bytes = 0;
    s.epoch = 1;
    s.uninit.clear();
    for (unsigned t = 0; t < nt; ++t) {
        Fiber& f = s.fibers[t];
        f.idx = dim3(t % s.block.x, (t / s.block.x) % s.block.y, t / (s.block.x * s.block.y));
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = st[t].get();
        f.ctx.uc_stack.ss_size = STACK_BYTES;
        f.ctx.uc_link = &s.sched;
        makecontext(&f.ctx, trampoline, 0);
    }
    for (;;) {
        for (unsigned t = 0; t < nt; ++t) {
#ifdef FM_EMU_MEMSTATS
            if (t % 32 == 0) flush_warp();  // the previous warp's phase is complete
#endif
            if (s.fibers[t].state != READY) continue;
            s.cur = t;
            swapcontext(&s.sched, &s.fibers[t].ctx);
            if (s.failed) return false;
        }
#ifdef FM_EMU_MEMSTATS
        flush_warp();
#endif
        if (!s.uninit.empty()) {
            s.failed = true;
            s.error = s.uninit;
            return false;
        }
        unsigned done = 0, waiting = 0;
        for (auto& f : s.fibers) {
            done += f.state == DONE;
            waiting += f.state == AT_BARRIER;
        }
        if (done == nt) return true;
        if (done > 0) {
            s.failed = true;
            s.error = "divergent __syncthreads(): " + std::to_string(done) + " of " + std::to_string(nt) +
                      " threads returned while " + std::to_string(waiting) + " wait at a barrier";
            char buf[80];
            snprintf(buf, sizeof buf, " [block (%u,%u,%u)]", s.block_idx.x, s.block_idx.y, s.block_idx.z);
            s.error += buf;
            return false;
        }
        ++s.epoch;
        for (auto& f : s.fibers) f.state = READY;
    }
}

// -- launching from the host (ctypes) ---------------------------------------------------

struct LaunchCfg {
    unsigned grid[3];
    unsigned block[3];
    uint64_t dyn_shared;
};

struct PtrArg {  // what Python passes for an array argument
    void* ptr;
    int64_t nbytes;
    uint64_t dev;  // the address a device would give ptr: its allocation 256-byte aligned
};

template <class P>
struct ArgTraits {
    static_assert(std::is_arithmetic_v<P>, "kernel arguments must be arrays or arithmetic scalars");
    static P unpack(void* a, int) { P v; memcpy(&v, a, sizeof(P)); return v; }
    static std::string code() {
        return std::string(std::is_floating_point_v<P> ? "f" : (std::is_signed_v<P> ? "i" : "u")) +
               std::to_string(sizeof(P));
    }
};

template <class U>
struct ArgTraits<gptr<U>> {
    static gptr<U> unpack(void* a, int argno) {
        const PtrArg* p = static_cast<const PtrArg*>(a);
        return gptr<U>(static_cast<U*>(p->ptr), p->nbytes / (int64_t)sizeof(U), 0, argno, p->dev);
    }
    static std::string code() { return "p" + std::to_string(sizeof(U)); }
};

template <class... P>
const char* signature(void (*)(P...)) {
    static const std::string sig = [] {
        std::string out;
        ((out += ArgTraits<P>::code() + ","), ...);
        if (!out.empty()) out.pop_back();
        return out;
    }();
    return sig.c_str();
}

template <class... P, size_t... I>
std::tuple<P...> unpack_all(void** args, std::index_sequence<I...>) {
    return std::tuple<P...>(ArgTraits<P>::unpack(args[I], int(I))...);
}

template <class... P>
int launch(const LaunchCfg* cfg, void** args, void (*kernel)(P...), char* err, size_t errlen) {
    auto report = [&](const std::string& m) {
        snprintf(err, errlen, "%s", m.c_str());
        return 1;
    };
    const dim3 grid(cfg->grid[0], cfg->grid[1], cfg->grid[2]);
    const dim3 block(cfg->block[0], cfg->block[1], cfg->block[2]);
    const uint64_t nt = uint64_t(block.x) * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || nt == 0) return report("invalid launch: empty grid or block");
    if (nt > 1024 || block.z > 64) return report("invalid launch: more than 1024 threads per block or block.z > 64");
    if (grid.y > 65535 || grid.z > 65535) return report("invalid launch: grid.y or grid.z over 65535");
    if (cfg->dyn_shared > SHARED_LIMIT) return report("invalid launch: dynamic shared memory over 48 KiB");
    auto params = unpack_all<P...>(args, std::index_sequence_for<P...>{});
    struct Ctx {
        void (*k)(P...);
        std::tuple<P...>* p;
    } ctx{kernel, &params};
    State s;
    s.grid = grid;
    s.block = block;
    s.dyn_bytes = cfg->dyn_shared;
    s.body_arg = &ctx;
    s.body = [](State* st) {
        Ctx* c = static_cast<Ctx*>(st->body_arg);
        std::apply(c->k, *c->p);
    };
    State* saved = g;
    g = &s;
    bool ok = true;
    for (unsigned z = 0; z < grid.z && ok; ++z)
        for (unsigned y = 0; y < grid.y && ok; ++y)
            for (unsigned x = 0; x < grid.x && ok; ++x) {
                s.block_idx = dim3(x, y, z);
                ok = run_block(s);
            }
    g = saved;
    return ok ? 0 : report(s.error);
}

}  // namespace fm_emu

#define threadIdx (::fm_emu::g->fibers[::fm_emu::g->cur].idx)
#define blockIdx (::fm_emu::g->block_idx)
#define blockDim (::fm_emu::g->block)
#define gridDim (::fm_emu::g->grid)
#define __syncthreads() ::fm_emu::syncthreads()

#define FM_PTR(T) ::fm_emu::gptr<T>
// CUDA's find-first-set: 1 + the index of the lowest set bit, 0 for none
inline int __ffs(int x) { return __builtin_ffs(x); }
// CUDA's integer min and max (device functions at global scope)
template <class I, class = std::enable_if_t<std::is_integral_v<I>>>
inline I min(I a, I b) { return b < a ? b : a; }
template <class I, class = std::enable_if_t<std::is_integral_v<I>>>
inline I max(I a, I b) { return a < b ? b : a; }
#define FM_SHARED(T, name, n)         \
    static const char fm_tag_##name = 0; \
    ::fm_emu::sptr<T> name = ::fm_emu::shared_static<T>(&fm_tag_##name, (n), #name)
#define FM_DYN_SHARED(T, name) ::fm_emu::sptr<T> name = ::fm_emu::shared_dynamic<T>()
#define FM_SPTR(T) ::fm_emu::sptr<T>
#define FM_SPTR_CAST(U, p) ::fm_emu::sptr_cast<U>(p)

// exported by the generated unity source, one pair per kernel instantiation
#ifdef FM_EMU_MEMSTATS
// the statistics of the launches since the last reset, read by cuda_emulation.Emulator
extern "C" int fm_emu_mem_nsites() { return int(::fm_emu::mem.sites.size()); }
extern "C" void fm_emu_mem_site(int i, ::fm_emu::SiteTotals* out) { *out = ::fm_emu::mem.sites[i]; }
extern "C" uint64_t fm_emu_mem_footprint_sectors() { return ::fm_emu::mem.footprint.size(); }
extern "C" void fm_emu_mem_reset() {
    ::fm_emu::mem.sites.clear();
    ::fm_emu::mem.site_ids.clear();
    ::fm_emu::mem.pending.clear();
    ::fm_emu::mem.footprint.clear();
    for (auto& o : ::fm_emu::mem.occ) o.clear();
}
#endif

#define FM_EMU_EXPORT(SYM, ...)                                                                \
    extern "C" int fm_emu_launch__##SYM(const ::fm_emu::LaunchCfg* c, void** a, char* e, size_t n) { \
        return ::fm_emu::launch(c, a, &__VA_ARGS__, e, n);                                     \
    }                                                                                          \
    extern "C" const char* fm_emu_sig__##SYM() { return ::fm_emu::signature(&__VA_ARGS__); }

// Host build of the fused segmentation head: the kernel's arithmetic (seghead_common.cuh) compiled
// as plain C++ by segdeploy/plugins/seghead/host.py and called through ctypes. It is the reference
// the SegHead graph is checked with in ONNX Runtime, and the tests compare it with ONNX Runtime's
// Resize + ArgMax. It follows the kernel's two steps: the safe label of every source pixel, then
// every output pixel from its four sources, interpolating all classes where they do not agree.
//
// segdeploy_seghead_cpu_f32 is the same computation laid out for a CPU: the runtime's fused head
// for CPU engines (segdeploy/runtime/head.py). Its safe labels are computed plane by plane over
// blocks of pixels (contiguous, vectorised loads instead of one strided walk per pixel), the
// agreement of each source cell once instead of once per output pixel, the work split over
// threads by rows, and all scratch memory is the caller's (no allocation per frame). The labels
// are the same as segdeploy_seghead_f32's: same tests, same rounding, same interpolation.
#include <cstdint>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

#include "seghead_common.cuh"

namespace {

using segdeploy::seghead::agreed_label;
using segdeploy::seghead::axis_tap;
using segdeploy::seghead::interpolated_label;
using segdeploy::seghead::kMaxClasses;
using segdeploy::seghead::ScalarLoader;
using segdeploy::seghead::source_label;
using segdeploy::seghead::safe_margin;
using segdeploy::seghead::Tap;

const uint8_t kUnsafeCode = 255;  // a label code: classes are 0 .. 254
const int kBlock = 512;           // pixels per block of the safe-label pass (L1-resident state)
const long long kWorkPerThread = 4LL << 20;  // see segdeploy_seghead_cpu_f32

// Runs fn(begin, end) over [0, total) split into `threads` contiguous parts, on `threads` threads
// (the caller's among them).
template <typename Fn>
void parallel_for(long long total, int threads, Fn fn) {
    if (threads <= 1 || total < 2) {
        fn(0LL, total);
        return;
    }
    if (threads > total) {
        threads = static_cast<int>(total);
    }
    std::vector<std::thread> pool;
    pool.reserve(static_cast<size_t>(threads - 1));
    for (int t = 1; t < threads; ++t) {
        try {
            pool.emplace_back(fn, total * t / threads, total * (t + 1) / threads);
        } catch (const std::system_error&) {  // no thread to be had: this part on the caller's
            fn(total * t / threads, total * (t + 1) / threads);
        }
    }
    fn(0LL, total / threads);
    for (size_t t = 0; t < pool.size(); ++t) {
        pool[t].join();
    }
}

// Safe labels (source_label's result, kUnsafeCode for kUnsafe) of pixels [begin, end) of one
// image of c planes: the running top two per pixel, updated plane by plane over blocks.
void safe_labels(const float* image, long long plane, int c, long long begin, long long end,
                 uint8_t* safe) {
    float top1[kBlock], top2[kBlock];
    uint8_t best[kBlock];
    for (long long p0 = begin; p0 < end; p0 += kBlock) {
        const int n = static_cast<int>(end - p0 < kBlock ? end - p0 : kBlock);
        if (c == 1) {
            std::memset(safe + p0, 0, static_cast<size_t>(n));
            continue;
        }
        const float* x0 = image + p0;
        const float* x1 = x0 + plane;
        for (int i = 0; i < n; ++i) {  // classes 0 and 1 (source_label: top2 = the other one)
            const bool gt = x1[i] > x0[i];
            top1[i] = gt ? x1[i] : x0[i];
            top2[i] = gt ? x0[i] : x1[i];
            best[i] = gt ? 1 : 0;
        }
        for (int k = 2; k < c; ++k) {
            const float* xk = x0 + k * plane;
            const uint8_t label = static_cast<uint8_t>(k);
            for (int i = 0; i < n; ++i) {
                const float v = xk[i];
                const bool gt = v > top1[i];
                top2[i] = gt ? top1[i] : (v > top2[i] ? v : top2[i]);
                top1[i] = gt ? v : top1[i];
                best[i] = gt ? label : best[i];
            }
        }
        for (int i = 0; i < n; ++i) {
            safe[p0 + i] = safe_margin(top1[i], top2[i]) ? best[i] : kUnsafeCode;
        }
    }
}

// Source row i of the c planes laid out pixel-major: dst[j * c + k] = x[k][i][j].
void pixel_major(const float* x, long long plane, int c, int w, int i, float* dst) {
    const float* src = x + static_cast<long long>(i) * w;
    for (int k = 0; k < c; ++k) {
        const float* plane_row = src + k * plane;
        for (int j = 0; j < w; ++j) {
            dst[static_cast<long long>(j) * c + k] = plane_row[j];
        }
    }
}

// Source row i pixel-major in one of the two slots: the slot that holds it, else laid out in the
// slot that does not hold row `keep` (the other row of the pair).
const float* source_row(const float* x, long long plane, int c, int w, int i, int keep,
                        float* slot[2], int held[2]) {
    for (int s = 0; s < 2; ++s) {
        if (held[s] == i) {
            return slot[s];
        }
    }
    const int s = held[0] == keep ? 1 : 0;
    pixel_major(x, plane, c, w, i, slot[s]);
    held[s] = i;
    return slot[s];
}

// interpolated_label's result from pixel-major source rows r1 (ty.i1) and r2 (ty.i2): the same
// weights, the same four products summed in the same order for each class (classes independent,
// so the loop vectorises without reordering any sum), then the first index of the maximum.
uint8_t interpolated_pixel_major(const float* r1, const float* r2, int c, const Tap& ty,
                                 const Tap& tx, float* values) {
    const float w11 = segdeploy::seghead::mul_rn(tx.d2, ty.d2);
    const float w21 = segdeploy::seghead::mul_rn(tx.d1, ty.d2);
    const float w12 = segdeploy::seghead::mul_rn(tx.d2, ty.d1);
    const float w22 = segdeploy::seghead::mul_rn(tx.d1, ty.d1);
    const float* p11 = r1 + static_cast<long long>(tx.i1) * c;
    const float* p21 = r1 + static_cast<long long>(tx.i2) * c;
    const float* p12 = r2 + static_cast<long long>(tx.i1) * c;
    const float* p22 = r2 + static_cast<long long>(tx.i2) * c;
    for (int k = 0; k < c; ++k) {
        float v = w11 * p11[k];
        v = v + w21 * p21[k];
        v = v + w12 * p12[k];
        values[k] = v + w22 * p22[k];
    }
    float best_v = values[0];
    int best = 0;
    for (int k = 1; k < c; ++k) {
        if (values[k] > best_v) {
            best_v = values[k];
            best = k;
        }
    }
    return static_cast<uint8_t>(best);
}

}  // namespace

extern "C" {

// Version of this C interface; host.py checks it.
int segdeploy_seghead_abi_version() { return 3; }

// labels (n x out_h x out_w, uint8) = ArgMax(Resize(x)) for x: n x c x h x w float32.
// scale_h, scale_w: ONNX Runtime's scales of the two axes; align_corners: 1 or 0 (half_pixel).
// *slow receives the number of output pixels that needed all classes interpolated.
// Returns 0, or -1 for arguments the kernel does not take (host.py checks them first).
static int reference_head(const float* x, uint8_t* labels, int n, int c, int h, int w,
                          int out_h, int out_w, float scale_h, float scale_w, int align_corners,
                          long long* slow) {
    if (n < 0 || c < 1 || c > kMaxClasses || h < 1 || w < 1 || out_h < 1 || out_w < 1 ||
        !(scale_h > 0.0f) || !(scale_w > 0.0f)) {
        return -1;
    }
    std::vector<Tap> ty(out_h), tx(out_w);
    for (int y = 0; y < out_h; ++y) {
        ty[y] = axis_tap(y, h, out_h, scale_h, align_corners);
    }
    for (int xo = 0; xo < out_w; ++xo) {
        tx[xo] = axis_tap(xo, w, out_w, scale_w, align_corners);
    }
    const long long plane = static_cast<long long>(h) * w;
    std::vector<int> safe(static_cast<size_t>(plane));
    long long count = 0;
    for (int b = 0; b < n; ++b) {
        const float* image = x + static_cast<long long>(b) * c * plane;
        for (long long i = 0; i < plane; ++i) {
            safe[static_cast<size_t>(i)] =
                source_label<float, ScalarLoader<float> >(image + i, plane, c);
        }
        uint8_t* out = labels + static_cast<long long>(b) * out_h * out_w;
        for (int y = 0; y < out_h; ++y) {
            const Tap& a = ty[y];
            const int* s1 = safe.data() + static_cast<long long>(a.i1) * w;
            const int* s2 = safe.data() + static_cast<long long>(a.i2) * w;
            for (int xo = 0; xo < out_w; ++xo) {
                const Tap& t = tx[xo];
                int label = agreed_label(s1[t.i1], s1[t.i2], s2[t.i1], s2[t.i2]);
                if (label < 0) {
                    label = interpolated_label<float, ScalarLoader<float> >(image, w, plane, c, a,
                                                                             t);
                    ++count;
                }
                out[static_cast<long long>(y) * out_w + xo] = static_cast<uint8_t>(label);
            }
        }
    }
    if (slow != 0) {
        *slow = count;
    }
    return 0;
}

// The interface of reference_head: -2 where its scratch memory ran out.
int segdeploy_seghead_f32(const float* x, uint8_t* labels, int n, int c, int h, int w, int out_h,
                          int out_w, float scale_h, float scale_w, int align_corners,
                          long long* slow) {
    try {  // no C++ exception may cross the C interface (ctypes)
        return reference_head(x, labels, n, c, h, w, out_h, out_w, scale_h, scale_w,
                              align_corners, slow);
    } catch (...) {
        return -2;
    }
}

// Scratch bytes segdeploy_seghead_cpu_f32 needs (the caller allocates them once per size).
long long segdeploy_seghead_cpu_workspace(int c, int h, int w, int out_h, int out_w, int threads) {
    const long long taps = static_cast<long long>(out_h + out_w) * sizeof(Tap);
    const long long rows = static_cast<long long>(threads < 1 ? 1 : threads) * (2LL * w + 1) * c;
    return taps + rows * static_cast<long long>(sizeof(float)) + 2LL * h * w;
}

// The CPU layout of segdeploy_seghead_f32 for one image: labels (out_h x out_w uint8) of
// x (c x h x w float32), using up to `threads` threads (one per work_per_thread of work; 0: the
// default) and the caller's workspace of segdeploy_seghead_cpu_workspace bytes (aligned for
// float). Same arguments and result otherwise.
static int cpu_head(const float* x, uint8_t* labels, int c, int h, int w, int out_h, int out_w,
                    float scale_h, float scale_w, int align_corners, int threads,
                    long long work_per_thread, void* workspace, long long* slow) {
    if (c < 1 || c > kMaxClasses || h < 1 || w < 1 || out_h < 1 || out_w < 1 ||
        !(scale_h > 0.0f) || !(scale_w > 0.0f) || workspace == 0) {
        return -1;
    }
    // One more thread per kWorkPerThread of work (output pixels + source values): starting and
    // waking threads costs about a millisecond on a small VM, more than a 512x1024 head with
    // 19 classes gains from a second thread (scripts/bench_head.py --micro, docs/benchmarks.md).
    const long long work =
        static_cast<long long>(out_h) * out_w + static_cast<long long>(c) * h * w;
    const long long useful = 1 + work / (work_per_thread > 0 ? work_per_thread : kWorkPerThread);
    threads = static_cast<int>(threads < 1 ? 1 : (threads < useful ? threads : useful));
    Tap* ty = static_cast<Tap*>(workspace);
    Tap* tx = ty + out_h;
    float* rows = reinterpret_cast<float*>(tx + out_w);  // per thread: 2 source rows + values
    const long long per_thread = (2LL * w + 1) * c;
    uint8_t* safe = reinterpret_cast<uint8_t*>(rows + threads * per_thread);
    uint8_t* cell = safe + static_cast<long long>(h) * w;
    const long long plane = static_cast<long long>(h) * w;
    for (int y = 0; y < out_h; ++y) {
        ty[y] = axis_tap(y, h, out_h, scale_h, align_corners);
    }
    for (int xo = 0; xo < out_w; ++xo) {
        tx[xo] = axis_tap(xo, w, out_w, scale_w, align_corners);
    }
    // 1. the safe label of every source pixel
    parallel_for(plane, threads, [=](long long begin, long long end) {
        safe_labels(x, plane, c, begin, end, safe);
    });
    // 2. each source cell's agreed label: its pixel, the right, lower and diagonal neighbours
    //    (clamped at the border, as the taps are), all safe and equal
    parallel_for(h, threads, [=](long long begin, long long end) {
        for (long long i = begin; i < end; ++i) {
            const uint8_t* s1 = safe + i * w;
            const uint8_t* s2 = safe + (i + 1 < h ? i + 1 : i) * w;
            uint8_t* row = cell + i * w;
            for (int j = 0; j < w; ++j) {
                const int j2 = j + 1 < w ? j + 1 : j;
                const uint8_t a = s1[j];
                const bool same = a == s1[j2] && a == s2[j] && a == s2[j2];
                row[j] = same ? a : kUnsafeCode;  // an unsafe a stays unsafe
            }
        }
    });
    // 3. every output pixel: its cell's label, or all classes interpolated (from the two source
    //    rows laid out pixel-major, so that a pixel's classes are contiguous)
    std::vector<long long> counts(static_cast<size_t>(threads), 0);
    const long long rows_per = (out_h + threads - 1) / threads;
    parallel_for(threads, threads, [=, &counts](long long t0, long long t1) {
        for (long long t = t0; t < t1; ++t) {
            // two slots of one pixel-major source row each; moving down one source row
            // re-lays out one row, not two
            float* slot[2] = {rows + t * per_thread, rows + t * per_thread + 1LL * w * c};
            int held[2] = {-1, -1};
            float* values = slot[1] + static_cast<long long>(w) * c;
            int laid_out = -1;  // the source row pair (by ty.i1) r1, r2 point at
            const float* r1 = 0;
            const float* r2 = 0;
            long long count = 0;
            const long long y1 = (t + 1) * rows_per < out_h ? (t + 1) * rows_per : out_h;
            for (long long y = t * rows_per; y < y1; ++y) {
                const Tap& a = ty[y];
                const uint8_t* row = cell + static_cast<long long>(a.i1) * w;
                uint8_t* out = labels + y * out_w;
                for (int xo = 0; xo < out_w; ++xo) {
                    uint8_t label = row[tx[xo].i1];
                    if (label == kUnsafeCode) {
                        if (laid_out != a.i1) {
                            r1 = source_row(x, plane, c, w, a.i1, a.i2, slot, held);
                            r2 = source_row(x, plane, c, w, a.i2, a.i1, slot, held);
                            laid_out = a.i1;
                        }
                        label = interpolated_pixel_major(r1, r2, c, a, tx[xo], values);
                        ++count;
                    }
                    out[xo] = label;
                }
            }
            counts[static_cast<size_t>(t)] = count;
        }
    });
    if (slow != 0) {
        long long total = 0;
        for (size_t t = 0; t < counts.size(); ++t) {
            total += counts[t];
        }
        *slow = total;
    }
    return 0;
}

// Returns 0, -1 for arguments it does not take, -2 where memory for its bookkeeping ran out.
int segdeploy_seghead_cpu_f32(const float* x, uint8_t* labels, int c, int h, int w, int out_h,
                              int out_w, float scale_h, float scale_w, int align_corners,
                              int threads, long long work_per_thread, void* workspace,
                              long long* slow) {
    try {  // no C++ exception may cross the C interface (ctypes)
        return cpu_head(x, labels, c, h, w, out_h, out_w, scale_h, scale_w, align_corners,
                        threads, work_per_thread, workspace, slow);
    } catch (...) {
        return -2;
    }
}

}  // extern "C"

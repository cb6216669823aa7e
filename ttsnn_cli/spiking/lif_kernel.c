/* The fused LIF sequence of ttsnn_cli/spiking/neurons.py (_LIFSequence) as one pass over memory per direction.
 *
 * Built at run time by ttsnn_cli/spiking/lif_kernel.py and called through ctypes on CPU float32 tensors whose
 * T steps each hold n neurons in one dense block (any memory format: every tensor here shares it).
 * Every float operation is the one the PyTorch loop performs, in the same order and precision, so
 * the results are bitwise equal to it (the build disables FMA contraction; the loader checks).
 * BLOCK neurons at a time keep the membrane in L1 cache across the T steps. The exported functions
 * split the n neurons into contiguous runs of whole blocks, one per thread, over the OpenMP runtime
 * (built with -fopenmp; the loader uses `threads` > 1 only when that runtime is torch's own, whose
 * threads then take the work instead of spinning beside it). The split changes no value: each
 * neuron's arithmetic is its own.
 *
 * mechanism: 0 subtract, 1 zero, 2 none (snntorch's reset_mechanism_val codes).
 * state byte: 2 * (1 - spike) + window, window = |u - threshold| < width (the surrogate's support).
 */
#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define BLOCK 512

static void forward_range(const float *seq, float *spikes, uint8_t *state, long steps, long n, long begin,
                          long end, float beta, float threshold, float width, int mechanism)
{
    float mem[BLOCK], previous[BLOCK];
    for (long b = begin; b < end; b += BLOCK) {
        long m = end - b < BLOCK ? end - b : BLOCK;
        for (long t = 0; t < steps; ++t) {
            const float *x = seq + t * n + b;
            float *s = spikes + t * n + b;
            uint8_t *st = state + t * n + b;
            if (t == 0) {
                for (long j = 0; j < m; ++j) mem[j] = x[j];
            } else if (mechanism == 1) { /* (u * (1 - s)) * beta + x */
                for (long j = 0; j < m; ++j) {
                    float u = mem[j] * (1.0f - previous[j]);
                    u = u * beta;
                    mem[j] = u + x[j];
                }
            } else if (mechanism == 0) { /* (u * beta + x) - s * threshold */
                for (long j = 0; j < m; ++j) {
                    float u = mem[j] * beta;
                    u = u + x[j];
                    mem[j] = u - previous[j] * threshold;
                }
            } else {
                for (long j = 0; j < m; ++j) {
                    float u = mem[j] * beta;
                    mem[j] = u + x[j];
                }
            }
            for (long j = 0; j < m; ++j) {
                float shift = mem[j] - threshold;
                float spike = shift > 0.0f ? 1.0f : 0.0f;
                float window = fabsf(shift) < width ? 1.0f : 0.0f;
                s[j] = spike;
                previous[j] = spike;
                st[j] = (uint8_t)(window + 2.0f * (1.0f - spike));
            }
        }
    }
}

/* g_t = grad_t * window_t + carried, carried = ((1 - s_t) * g_{t+1}) * beta (zero reset) or
 * g_{t+1} * beta (subtract, none); nothing is carried into the last step. */
static void backward_range(const float *grad, const uint8_t *state, float *out, long steps, long n, long begin,
                           long end, float beta, int mechanism)
{
    float next[BLOCK];
    for (long b = begin; b < end; b += BLOCK) {
        long m = end - b < BLOCK ? end - b : BLOCK;
        for (long t = steps - 1; t >= 0; --t) {
            const float *g = grad + t * n + b;
            const uint8_t *st = state + t * n + b;
            float *o = out + t * n + b;
            if (t == steps - 1) {
                for (long j = 0; j < m; ++j) {
                    float v = g[j] * (float)(st[j] & 1);
                    o[j] = v;
                    next[j] = v;
                }
            } else if (mechanism == 1) {
                for (long j = 0; j < m; ++j) {
                    float v = g[j] * (float)(st[j] & 1);
                    float carried = (float)(st[j] >> 1) * next[j];
                    carried = carried * beta;
                    v = v + carried;
                    o[j] = v;
                    next[j] = v;
                }
            } else {
                for (long j = 0; j < m; ++j) {
                    float v = g[j] * (float)(st[j] & 1);
                    float carried = next[j] * beta;
                    v = v + carried;
                    o[j] = v;
                    next[j] = v;
                }
            }
        }
    }
}

static long block_start(long k, long n) { return k * BLOCK < n ? k * BLOCK : n; }

void lif_forward(const float *seq, float *spikes, uint8_t *state, long steps, long n, int threads,
                 float beta, float threshold, float width, int mechanism)
{
    long blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long k = 0; k < blocks; ++k)
        forward_range(seq, spikes, state, steps, n, block_start(k, n), block_start(k + 1, n), beta, threshold,
                      width, mechanism);
}

void lif_backward(const float *grad, const uint8_t *state, float *out, long steps, long n, int threads,
                  float beta, int mechanism)
{
    long blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long k = 0; k < blocks; ++k)
        backward_range(grad, state, out, steps, n, block_start(k, n), block_start(k + 1, n), beta, mechanism);
}

/* The 0/1 spikes recorded in a state byte, as floats: 1 - (state >> 1). */
void lif_spikes_of_state(const uint8_t *state, float *spikes, long n, int threads)
{
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long i = 0; i < n; ++i) spikes[i] = (float)(1 - (state[i] >> 1));
}

/* The entry point of the OpenMP runtime this library calls into, or null when built without it: the
 * loader compares it with torch's own runtime's. */
#ifdef _OPENMP
void *lif_openmp_runtime(void) { return (void *)&omp_get_max_threads; }
#else
void *lif_openmp_runtime(void) { return 0; }
#endif

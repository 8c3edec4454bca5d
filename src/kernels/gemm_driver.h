/*
 * gemm_driver.h - the loops around a matrix micro-kernel, shared by the
 * ISA files: include it after defining
 *   MR, NR, KC          the tile (rows x output channels) and the reduction block
 *   VEC                 the vector type holding NR / 2 floats
 *   GEMM_LINEAR, GEMM_CONV2D   the names of the functions to define
 * and the static inline helpers it calls: tap_block, load_tile, store_tile
 * (and the zero_row the convolution reads for padding, ZERO_ROW_FLOATS
 * long).
 *
 * The reduction is cut into blocks of KC so that a block of a weight panel
 * stays in L1 while every row tile of the call streams past it; partial
 * sums wait in the output. The blocks are the same whatever the split, so
 * each output is still one fixed sum.
 */

/* While the row tiles after the first go past a block of weights already
 * in L1, the kernel brings the weights that follow it (the next block of
 * the reduction, or the next panel's first) into L2, a line per k: the
 * second tile the first half of them, the third the rest (f16: all on the
 * second); otherwise the first tile of every block waits on memory. NULL
 * for the tiles with nothing to fetch. */
static inline const char *weights_ahead(const packed_weights *w, int64_t offset, int64_t kc, int64_t tile)
{
    size_t size = w->dtype == KILN_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t);
    const char *block = (const char *)w->data + (size_t)offset * size;
    size_t bytes = (size_t)(kc * NR) * size, done = (size_t)(tile - 1) * (size_t)kc * 64;
    return tile >= 1 && done < bytes ? block + bytes + done : NULL;
}

static void GEMM_LINEAR(const float *x, int64_t ldx, const packed_weights *w, const float *bias, float *y,
                              int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1)
{
    const int64_t k = w->k;
    for (int64_t n = n0; n < n1; n += NR) {
        int64_t panel = (n / NR) * k * NR;
        int64_t cols = n1 - n < NR ? n1 - n : NR;
        for (int64_t k0 = 0; k0 < k; k0 += KC) {
            int64_t kc = k - k0 < KC ? k - k0 : KC;
            for (int64_t m = m0; m < m1; m += MR) {
                int rows = m1 - m < MR ? (int)(m1 - m) : MR;
                const float *a[MR];
                float *out[MR];
                for (int r = 0; r < MR; r++) {
                    /* missing rows repeat the last one: computed, never stored */
                    int64_t row = m + (r < rows ? r : rows - 1);
                    a[r] = x + row * ldx + k0;
                    out[r] = y + row * ldy + n;
                }
                VEC c[2 * MR];
                load_tile(c, k0 == 0, rows, out, cols);
                tap_block(w, a, panel + k0 * NR, kc, weights_ahead(w, panel + k0 * NR, kc, (m - m0) / MR), c);
                store_tile(c, k0 + kc == k, rows, out, NULL, bias ? bias + n : NULL, cols);
            }
        }
    }
}

/* A convolution's output pixels are cut into runs of CONV_ROWS (the
 * executor's tiles are no larger): where each one's window starts is
 * worked out once per run and its input pixels once per tap, so that the
 * blocks of the reduction only add offsets. Dividing per row, tap and
 * block instead cost 5-15% (paired runs, UNet shapes, 1 and 2 threads). */
#define CONV_ROWS (8 * MR)

typedef struct conv_row {
    int64_t b, iy, ix; /* the image, and the input row and column of the window's top left (may be padding) */
} conv_row;

static void GEMM_CONV2D(const conv2d_geom *g, const float *x, const packed_weights *w, const float *bias,
                              const float *residual, float *y, int64_t p0, int64_t p1, int64_t c0, int64_t c1)
{
    const int64_t k = w->k, taps = w->taps, ksize = g->kernel;
    /* the zero row stands in for padding: wider inputs take the scalar path */
    if (k > ZERO_ROW_FLOATS) {
        kernels_for(KILN_ISA_SCALAR)->conv2d_f32(g, x, w, bias, residual, y, p0, p1, c0, c1);
        return;
    }
    conv_row rows[CONV_ROWS];
    const float *in[CONV_ROWS]; /* per row, its input pixel at the tap, or zero_row */
    for (int64_t q0 = p0; q0 < p1; q0 += CONV_ROWS) {
        int64_t q1 = p1 - q0 < CONV_ROWS ? p1 : q0 + CONV_ROWS;
        for (int64_t q = q0; q < q1; q++) {
            int64_t ox = q % g->out_w, oy = (q / g->out_w) % g->out_h;
            rows[q - q0] = (conv_row){.b = q / (g->out_w * g->out_h), .iy = oy * g->stride - g->pad_top,
                                      .ix = ox * g->stride - g->pad_left};
        }
        for (int64_t n = c0; n < c1; n += NR) {
            int64_t panel = (n / NR) * taps * k * NR;
            int64_t cols = c1 - n < NR ? c1 - n : NR;
            for (int64_t t = 0; t < taps; t++) {
                int64_t ky = t / ksize, kx = t % ksize;
                for (int64_t i = 0; i < q1 - q0; i++) {
                    int64_t iy = rows[i].iy + ky, ix = rows[i].ix + kx;
                    in[i] = iy < 0 || iy >= g->in_h || ix < 0 || ix >= g->in_w
                                ? zero_row
                                : conv2d_input_at(g, x, rows[i].b, iy, ix);
                }
                for (int64_t k0 = 0; k0 < k; k0 += KC) {
                    int64_t kc = k - k0 < KC ? k - k0 : KC;
                    int first = t == 0 && k0 == 0, last = t == taps - 1 && k0 + kc == k;
                    for (int64_t p = q0; p < q1; p += MR) {
                        int tile_rows = q1 - p < MR ? (int)(q1 - p) : MR;
                        const float *a[MR], *res[MR];
                        float *out[MR];
                        for (int r = 0; r < MR; r++) {
                            /* missing rows repeat the last one: computed, never stored */
                            int64_t q = p + (r < tile_rows ? r : tile_rows - 1);
                            const float *pixel = in[q - q0];
                            a[r] = pixel == zero_row ? zero_row : pixel + k0;
                            out[r] = y + q * g->out_c + n;
                            res[r] = residual ? residual + q * g->out_c + n : NULL;
                        }
                        VEC c[2 * MR];
                        load_tile(c, first, tile_rows, out, cols);
                        int64_t offset = panel + (t * k + k0) * NR;
                        tap_block(w, a, offset, kc, weights_ahead(w, offset, kc, (p - q0) / MR), c);
                        store_tile(c, last, tile_rows, out, residual ? res : NULL, bias ? bias + n : NULL, cols);
                    }
                }
            }
        }
    }
}

/* Core runtime: status strings, errors, tensors, clock, cpu query. */
#include <string.h>

#include "core/clock.h"
#include "core/cpu.h"
#include "core/error.h"
#include "core/tensor.h"
#include "kiln.h"
#include "test_support.h"

static void test_status_strings(void)
{
    CHECK(strcmp(kiln_status_string(KILN_OK), "ok") == 0, "ok string: got '%s'", kiln_status_string(KILN_OK));
    CHECK(strcmp(kiln_status_string(KILN_ERR_NOMEM), "out of memory") == 0, "nomem string: got '%s'",
          kiln_status_string(KILN_ERR_NOMEM));
    CHECK(strcmp(kiln_status_string((kiln_status)-99), "unknown status") == 0, "unknown status: got '%s'",
          kiln_status_string((kiln_status)-99));
}

static void test_error_messages(void)
{
    err_clear();
    CHECK(kiln_last_error()[0] == '\0', "cleared error: got '%s'", kiln_last_error());
    kiln_status st = err_set(KILN_ERR_SHAPE, "tensor '%s' expected %s", "x", "[2, 3]");
    CHECK_EQ_INT(st, KILN_ERR_SHAPE);
    CHECK(strcmp(kiln_last_error(), "tensor 'x' expected [2, 3]") == 0, "message: got '%s'", kiln_last_error());
    err_wrap(KILN_ERR_SHAPE, "loading %s: ", "unet");
    CHECK(strcmp(kiln_last_error(), "loading unet: tensor 'x' expected [2, 3]") == 0, "wrapped: got '%s'",
          kiln_last_error());
    /* an over-long message is cut, not overflowed */
    char big[4000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    err_set(KILN_ERR_IO, "%s", big);
    CHECK(strlen(kiln_last_error()) < sizeof big, "long message must be cut, length %zu", strlen(kiln_last_error()));
}

static void test_tensor_shapes(void)
{
    int64_t shape[4] = {2, 8, 8, 320};
    tensor t;
    CHECK_EQ_INT(tensor_init(&t, KILN_DTYPE_F16, TENSOR_LAYOUT_NHWC, 4, shape, NULL), KILN_OK);
    CHECK_EQ_INT(tensor_numel(&t), 2 * 8 * 8 * 320);
    CHECK_EQ_INT(tensor_nbytes(&t), 2 * 8 * 8 * 320 * 2);
    CHECK_EQ_INT(tensor_channels(&t), 320);
    CHECK_EQ_INT(tensor_height(&t), 8);

    tensor img = tensor_image(KILN_DTYPE_F32, TENSOR_LAYOUT_NCHW, 1, 4, 64, 32, NULL);
    CHECK_EQ_INT(img.shape[1], 4);
    CHECK_EQ_INT(tensor_width(&img), 32);
    tensor img2 = tensor_image(KILN_DTYPE_F32, TENSOR_LAYOUT_NHWC, 1, 4, 64, 32, NULL);
    CHECK_EQ_INT(img2.shape[3], 4);
    CHECK(!tensor_same_shape(&img, &img2), "NCHW and NHWC views must differ");

    int64_t five[5] = {1, 2, 3, 4, 5};
    CHECK_EQ_INT(tensor_init(&t, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 5, five, NULL), KILN_ERR_SHAPE);
    int64_t negative[2] = {3, -1};
    CHECK_EQ_INT(tensor_init(&t, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 2, negative, NULL), KILN_ERR_SHAPE);
    CHECK(strstr(kiln_last_error(), "negative") != NULL, "negative dim message: got '%s'", kiln_last_error());

    char buf[64];
    CHECK(strcmp(tensor_shape_str(shape, 4, buf, sizeof buf), "[2, 8, 8, 320]") == 0, "shape string: got '%s'", buf);
    CHECK_EQ_INT(kiln_dtype_size(KILN_DTYPE_BF16), 2);
    CHECK(strcmp(kiln_dtype_name(KILN_DTYPE_F8_E4M3), "F8_E4M3") == 0, "dtype name: got %s",
          kiln_dtype_name(KILN_DTYPE_F8_E4M3));
}

static void test_clock_is_monotonic(void)
{
    uint64_t a = clock_now_ns();
    volatile double sink = 0;
    for (int i = 0; i < 100000; i++)
        sink += i;
    uint64_t b = clock_now_ns();
    CHECK(b >= a, "clock went back: %llu then %llu", (unsigned long long)a, (unsigned long long)b);
    CHECK(clock_process_cpu() > 0, "process cpu time must be positive");
}

static void test_cpu_query(void)
{
    kiln_cpu_info info;
    kiln_cpu_query(&info);
    CHECK(info.logical_cores >= 1, "logical cores: got %d", info.logical_cores);
    CHECK(info.isa <= info.best_isa, "isa in use %d above best %d", info.isa, info.best_isa);
    CHECK(info.model[0] != '\0', "cpu model string is empty");
    if (info.best_isa >= KILN_ISA_AVX512)
        CHECK(info.has_avx512f && info.has_avx512bw && info.has_avx2, "avx512 level without its features");
    kiln_isa parsed;
    CHECK(cpu_parse_isa("avx2", &parsed) == 0 && parsed == KILN_ISA_AVX2, "parse avx2");
    CHECK(cpu_parse_isa("sse9", &parsed) != 0, "parse must reject sse9");
}

TEST_MAIN(TEST(test_status_strings), TEST(test_error_messages), TEST(test_tensor_shapes),
          TEST(test_clock_is_monotonic), TEST(test_cpu_query))

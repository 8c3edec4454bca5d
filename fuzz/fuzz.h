/*
 * fuzz.h - the fuzz targets: one function per parser that takes any bytes,
 * runs the parser on them and checks what must hold whatever they are.
 *
 * Built two ways: as libFuzzer binaries (fuzz/CMakeLists.txt, clang,
 * -fsanitize=fuzzer,address,undefined), where each file also defines
 * LLVMFuzzerTestOneInput; and with KILN_FUZZ_REPLAY into
 * tests/test_fuzz_regressions, which replays the seed corpora and every
 * input a fuzzer once crashed on (tests/data/regressions/<target>/) with any
 * compiler, so the suite guards them without clang.
 *
 * A broken property prints what held and what did not, with the input's
 * name when the replay test set one, and aborts: libFuzzer saves the input
 * as a crash, and the replay test fails.
 */
#ifndef KILN_FUZZ_H
#define KILN_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Each returns 0; a failed check aborts. Not thread-safe (they keep state
 * between inputs: a scratch file, the tokenizer). */
int fuzz_safetensors(const uint8_t *data, size_t size);
int fuzz_tokenizer(const uint8_t *data, size_t size);
int fuzz_png(const uint8_t *data, size_t size);
int fuzz_parameters(const uint8_t *data, size_t size);
int fuzz_request(const uint8_t *data, size_t size); /* apps/serve/request.c */

/* Loads the tokenizer fuzz_tokenizer uses (vocab.json and merges.txt in
 * dir). Returns 0, or -1 after printing why. */
int fuzz_tokenizer_init(const char *dir);
void fuzz_tokenizer_deinit(void);

/* The name of the input being replayed, for failure messages; NULL while
 * fuzzing (libFuzzer names the crashing input itself). */
extern const char *fuzz_input_name;

void fuzz_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));

#define FUZZ_CHECK(cond, ...)                                                                            \
    do {                                                                                                 \
        if (!(cond))                                                                                     \
            fuzz_fail(__FILE__, __LINE__, __VA_ARGS__);                                                  \
    } while (0)

/* A NUL-terminated copy of the input (the text parsers take C strings, so
 * an input is cut at its first NUL). malloc'd; aborts when out of memory. */
char *fuzz_text(const uint8_t *data, size_t size);

#ifndef KILN_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);
#endif

#endif

/*
 * A model file that is cut short or changed on disk, before and after
 * kiln_model_load, with the tiny random-weight model: loading a truncated
 * copy fails with a message naming the file; a file truncated or rewritten
 * after load never faults the process (SIGBUS from its mapping) and gives
 * either the images of the weights loaded or an error naming the file.
 * The cases that could fault run in a child process, so that a signal is
 * reported as a failure instead of ending the test.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kiln.h"
#include "test_support.h"
#include "tiny_model.h"

static const char *model_path;
static uint8_t *model_bytes;
static size_t model_size;

/* The tiny model's path, its bytes read into model_bytes once (the copies
 * below are made from them). */
static const char *tiny_model_read(void)
{
    if (model_path)
        return model_path;
    const char *path = tiny_model();
    if (!path)
        return NULL;
    FILE *f = fopen(path, "rb");
    struct stat info;
    if (f && fstat(fileno(f), &info) == 0 && (model_bytes = malloc((size_t)info.st_size)) &&
        fread(model_bytes, 1, (size_t)info.st_size, f) == (size_t)info.st_size) {
        model_size = (size_t)info.st_size;
        model_path = path;
    }
    if (f)
        fclose(f);
    CHECK(model_path != NULL, "reading back %s", path);
    return model_path;
}

/* A copy of the tiny model (its tokenizer found through the original's
 * folder), first `bytes` bytes of it; returns the path (static buffer). */
static const char *copy_model(const char *name, size_t bytes)
{
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", test_tmp_dir(), name);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(model_bytes, 1, bytes, f) == bytes && fclose(f) == 0, "writing %s", path);
    return path;
}

static kiln_request request(void)
{
    kiln_request r;
    kiln_request_defaults(&r);
    r.prompt = "a red circle";
    r.steps = 3;
    r.seed = 99;
    r.width = r.height = 64;
    return r;
}

static char *tokenizer_dir(void)
{
    char *dir = malloc(600);
    snprintf(dir, 600, "%s/tokenizer", test_tmp_dir());
    return dir;
}

typedef struct session {
    kiln_engine *engine;
    kiln_model *model;
} session;

static kiln_status open_session(session *s, const char *path)
{
    memset(s, 0, sizeof *s);
    kiln_engine_options eo;
    kiln_engine_options_defaults(&eo);
    eo.threads = 2;
    kiln_model_options mo;
    kiln_model_options_defaults(&mo);
    char *tok = tokenizer_dir();
    mo.tokenizer_dir = tok;
    kiln_status st = kiln_engine_create(&eo, &s->engine);
    if (st == KILN_OK)
        st = kiln_model_load(s->engine, path, &mo, &s->model);
    free(tok);
    return st;
}

static void close_session(session *s)
{
    kiln_model_destroy(s->model);
    kiln_engine_destroy(s->engine);
}

/* The first image of the request on a fresh load of the intact model. */
static uint8_t *reference_pixels(void)
{
    static uint8_t *pixels;
    if (pixels || !tiny_model_read())
        return pixels;
    session s;
    kiln_result *res = NULL;
    kiln_request r = request();
    if (open_session(&s, model_path) == KILN_OK && kiln_generate(s.model, &r, &res) == KILN_OK) {
        pixels = malloc(64 * 64 * 3);
        memcpy(pixels, res->images[0].rgb, 64 * 64 * 3);
    }
    CHECK(pixels != NULL, "the reference image: %s", kiln_last_error());
    kiln_result_destroy(res);
    close_session(&s);
    return pixels;
}

static void test_truncated_before_load(void)
{
    if (!tiny_model_read())
        return;
    /* inside the header, at its end, inside the data, one byte short */
    uint64_t header = 0;
    memcpy(&header, model_bytes, 8);
    size_t cuts[] = {0, 4, 8, 8 + (size_t)header / 2, 8 + (size_t)header, model_size / 2, model_size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        const char *path = copy_model("cut.safetensors", cuts[i]);
        session s;
        kiln_status st = open_session(&s, path);
        const char *msg = kiln_last_error();
        CHECK(st == KILN_ERR_FORMAT || st == KILN_ERR_IO, "cut at %zu of %zu bytes: status %d (%s)", cuts[i],
              model_size, st, msg);
        CHECK(strstr(msg, path) != NULL, "cut at %zu: the message does not name the file: %s", cuts[i], msg);
        close_session(&s);
    }
}

typedef enum change { CUT_TO_ZERO, CUT_HALF, REWRITE_ZEROS, REPLACE_NEW_FILE, CUT_DURING } change;

static const char *const change_names[] = {"truncated to 0 bytes", "truncated to half", "rewritten in place with zeros",
                                           "replaced by a new file (rename)",
                                           "truncated to 0 bytes during the denoising loop"};

/* CUT_DURING: the file goes at the first step of the generation */
static int cut_at_first_step(void *user, const kiln_progress *p)
{
    if (p->step == 1 && truncate(user, 0) != 0)
        fprintf(stderr, "cannot truncate %s: %s\n", (const char *)user, strerror(errno));
    return 0;
}

static int apply(change c, const char *path)
{
    switch (c) {
    case CUT_TO_ZERO: return truncate(path, 0);
    case CUT_HALF: return truncate(path, (off_t)(model_size / 2));
    case REWRITE_ZEROS: {
        int fd = open(path, O_WRONLY);
        if (fd < 0)
            return -1;
        uint8_t *zeros = calloc(1, model_size - 8);
        ssize_t n = pwrite(fd, zeros, model_size - 8, 8);
        free(zeros);
        close(fd);
        return n == (ssize_t)(model_size - 8) ? 0 : -1;
    }
    case CUT_DURING: return 0; /* cut_at_first_step does it */
    case REPLACE_NEW_FILE: {
        char tmp[700];
        snprintf(tmp, sizeof tmp, "%s.new", path);
        FILE *f = fopen(tmp, "wb");
        if (!f)
            return -1;
        fwrite(model_bytes, 1, 16, f); /* not a model at all */
        fclose(f);
        return rename(tmp, path);
    }
    }
    return -1;
}

/* In a child: load, maybe generate once, change the file, generate again.
 * Exit 0: the same pixels as the reference; 3: an I/O error naming the
 * file; anything else: a failure (printed). */
static int child(change c, int generate_first)
{
    const char *path = copy_model("live.safetensors", model_size);
    uint8_t *want = reference_pixels();
    session s;
    if (!want || open_session(&s, path) != KILN_OK) {
        fprintf(stderr, "cannot load %s: %s\n", path, kiln_last_error());
        return 1;
    }
    kiln_request r = request();
    kiln_result *res = NULL;
    if (generate_first) {
        if (kiln_generate(s.model, &r, &res) != KILN_OK) {
            fprintf(stderr, "generating before the change: %s\n", kiln_last_error());
            return 1;
        }
        kiln_result_destroy(res);
        res = NULL;
    }
    if (apply(c, path) != 0) {
        fprintf(stderr, "cannot change %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (c == CUT_DURING) {
        r.on_progress = cut_at_first_step;
        r.user = (void *)path;
    }
    kiln_status st = kiln_generate(s.model, &r, &res);
    int code;
    if (st == KILN_OK) {
        code = memcmp(res->images[0].rgb, want, 64 * 64 * 3) == 0 ? 0 : 4;
        if (code)
            fprintf(stderr, "an image from changed weights, without an error\n");
    } else {
        const char *msg = kiln_last_error();
        code = st == KILN_ERR_IO && strstr(msg, path) ? 3 : 5;
        fprintf(stderr, "%s: status %d: %s\n", code == 3 ? "refused" : "unexpected error", st, msg);
    }
    kiln_result_destroy(res);
    close_session(&s);
    return code;
}

static void run_case(change c, int generate_first, int allow_refusal)
{
    if (!reference_pixels())
        return;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(child(c, generate_first));
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid, "fork/wait failed");
    const char *when = generate_first ? "after a first generation" : "right after load";
    if (WIFSIGNALED(status)) {
        CHECK(0, "file %s %s: the process died of signal %d (%s)", change_names[c], when, WTERMSIG(status),
              strsignal(WTERMSIG(status)));
        return;
    }
    int code = WEXITSTATUS(status);
    CHECK(code == 0 || (allow_refusal && code == 3), "file %s %s: child exit %d (0: same image%s)", change_names[c],
          when, code, allow_refusal ? ", 3: an error naming the file" : "");
    printf("  file %s %s: %s\n", change_names[c], when, code == 0 ? "same image" : code == 3 ? "refused" : "FAILED");
}

static void test_truncated_after_load(void)
{
    run_case(CUT_TO_ZERO, 0, 1);
    run_case(CUT_HALF, 0, 1);
    run_case(CUT_TO_ZERO, 1, 1);
    run_case(CUT_HALF, 1, 1);
}

static void test_rewritten_after_load(void)
{
    run_case(REWRITE_ZEROS, 0, 1);
    run_case(REWRITE_ZEROS, 1, 1);
}

/* A new file under the old name leaves the mapped one intact: kiln goes
 * on with the weights it loaded, no error. */
static void test_replaced_after_load(void)
{
    run_case(REPLACE_NEW_FILE, 0, 0);
    run_case(REPLACE_NEW_FILE, 1, 0);
}

/* Cut while a generation runs: the first one still prepares the decoder
 * after the loop (from the file: refused, naming it); a later one reads
 * only what load and the first generation prepared (the same image). */
static void test_truncated_during_generation(void)
{
    run_case(CUT_DURING, 0, 1);
    run_case(CUT_DURING, 1, 0);
}

TEST_MAIN(TEST(test_truncated_before_load), TEST(test_truncated_after_load), TEST(test_rewritten_after_load),
          TEST(test_replaced_after_load), TEST(test_truncated_during_generation))

/*
 * kiln.h - the public interface of libkiln, a Stable Diffusion engine in C.
 *
 * Conventions, true of every function below:
 *   - Fallible functions return a kiln_status: KILN_OK (0) or a negative code.
 *     Results go through out-parameters, which are left untouched on failure.
 *   - After a failure, kiln_last_error() gives a message naming what went
 *     wrong (the file and byte offset, the tensor and the shape expected, ...).
 *   - Objects are made with kiln_<object>_open/create and released with the
 *     matching destroy; destroy(NULL) does nothing.
 *   - Pointer arguments are borrowed for the duration of the call.
 *   - The library never exits the process and never writes to stdout.
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KILN_API __attribute__((visibility("default")))
#else
#define KILN_API
#endif

/* ---- version ------------------------------------------------------------ */

#define KILN_VERSION_MAJOR 0
#define KILN_VERSION_MINOR 1
#define KILN_VERSION_PATCH 0

/* "MAJOR.MINOR.PATCH"; a static string. Thread-safe. */
KILN_API const char *kiln_version(void);

/* ---- status and errors -------------------------------------------------- */

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_ERR_NOMEM = -1,       /* an allocation failed */
    KILN_ERR_IO = -2,          /* a file could not be opened, read or written */
    KILN_ERR_FORMAT = -3,      /* a file or request is malformed */
    KILN_ERR_SHAPE = -4,       /* a tensor has the wrong shape or dtype */
    KILN_ERR_UNSUPPORTED = -5, /* valid, but kiln cannot do it (here) */
    KILN_ERR_CANCELLED = -6,   /* the caller asked to stop */
    KILN_ERR_INVALID = -7,     /* an argument is out of its allowed range */
} kiln_status;

#define KILN_STATUS_COUNT 8

/* A short fixed name for a status ("out of memory", "format error", ...).
 * Static string; thread-safe. */
KILN_API const char *kiln_status_string(kiln_status status);

/* The message left by the most recent failed call on this thread, or "" if
 * none failed yet. Each thread has its own; the string lives until the next
 * failing call on the same thread. */
KILN_API const char *kiln_last_error(void);

/* ---- data types ---------------------------------------------------------- */

/* Element types. The first four are the ones kiln computes with; the rest
 * exist so that any valid safetensors file can be described. */
typedef enum kiln_dtype {
    KILN_DTYPE_F32,
    KILN_DTYPE_F16,
    KILN_DTYPE_BF16,
    KILN_DTYPE_I32,
    KILN_DTYPE_F64,
    KILN_DTYPE_I64,
    KILN_DTYPE_I16,
    KILN_DTYPE_I8,
    KILN_DTYPE_U8,
    KILN_DTYPE_U16,
    KILN_DTYPE_U32,
    KILN_DTYPE_U64,
    KILN_DTYPE_BOOL,
    KILN_DTYPE_F8_E4M3,
    KILN_DTYPE_F8_E5M2,
    KILN_DTYPE_COUNT
} kiln_dtype;

/* Bytes per element, and the name safetensors uses ("F32", "BF16", ...).
 * Both thread-safe; the name is a static string. */
KILN_API size_t kiln_dtype_size(kiln_dtype dtype);
KILN_API const char *kiln_dtype_name(kiln_dtype dtype);

/* ---- the machine --------------------------------------------------------- */

/* Instruction set levels kiln has kernels for, lowest first. */
typedef enum kiln_isa {
    KILN_ISA_SCALAR, /* portable C */
    KILN_ISA_AVX2,   /* AVX2 + FMA + F16C */
    KILN_ISA_AVX512, /* AVX-512 F/BW/VL/DQ (+ BF16 dot products where present) */
    KILN_ISA_COUNT
} kiln_isa;

typedef struct kiln_cpu_info {
    char model[64];     /* brand string, e.g. "AMD EPYC 9R45 ..." */
    int logical_cores;  /* online logical processors */
    int has_avx2, has_fma, has_f16c;
    int has_avx512f, has_avx512bw, has_avx512vl, has_avx512dq;
    int has_avx512_bf16, has_avx512_vnni;
    kiln_isa best_isa;  /* the highest level this CPU and OS support */
    kiln_isa isa;       /* the level in use: best_isa, or lower if KILN_ISA says so */
} kiln_cpu_info;

/* Fills *out with what this CPU offers and which kernel level kiln uses.
 * Detection runs once; thread-safe. */
KILN_API void kiln_cpu_query(kiln_cpu_info *out);

/* "scalar", "avx2", "avx512". Static string. */
KILN_API const char *kiln_isa_name(kiln_isa isa);

/* ---- weight files (safetensors) ----------------------------------------- */

typedef struct kiln_weights kiln_weights;

#define KILN_MAX_FILE_DIMS 8

typedef struct kiln_tensor_desc {
    const char *name;       /* lives as long as the kiln_weights */
    kiln_dtype dtype;
    int ndim;               /* 0 (a scalar) to KILN_MAX_FILE_DIMS */
    int64_t shape[KILN_MAX_FILE_DIMS];
    uint64_t offset;        /* byte offset of the data from the start of the file */
    uint64_t nbytes;
} kiln_tensor_desc;

/* Opens a safetensors file and validates all of it before returning: the
 * header length, the JSON, every dtype, shape and offset, overlaps, and
 * duplicate names. The file is memory-mapped (read into memory where mapping
 * is not possible). Errors: KILN_ERR_IO (cannot open or read), KILN_ERR_FORMAT
 * (the message names the file, the tensor and the byte offset at fault),
 * KILN_ERR_NOMEM. On success *out owns the mapping until kiln_weights_destroy. */
KILN_API kiln_status kiln_weights_open(const char *path, kiln_weights **out);
KILN_API void kiln_weights_destroy(kiln_weights *w);

/* The path the file was opened from, and its size in bytes. */
KILN_API const char *kiln_weights_path(const kiln_weights *w);
KILN_API uint64_t kiln_weights_file_size(const kiln_weights *w);

/* Tensors in the order of their data in the file. index < count. The returned
 * pointer lives as long as w. Thread-safe (w is read-only after open). */
KILN_API size_t kiln_weights_count(const kiln_weights *w);
KILN_API const kiln_tensor_desc *kiln_weights_tensor(const kiln_weights *w, size_t index);

/* The tensor with this name, or NULL. */
KILN_API const kiln_tensor_desc *kiln_weights_find(const kiln_weights *w, const char *name);

/* A pointer to the tensor's bytes, in place in the mapped file, as stored
 * (little-endian). Lives as long as w. */
KILN_API const void *kiln_weights_data(const kiln_weights *w, const kiln_tensor_desc *t);

/* Converts a F32, F16 or BF16 tensor to f32 into dst, which holds count
 * floats; count must equal the tensor's element count. Errors: KILN_ERR_SHAPE
 * (count differs; names the tensor), KILN_ERR_UNSUPPORTED (other dtypes). */
KILN_API kiln_status kiln_weights_read_f32(const kiln_weights *w, const kiln_tensor_desc *t,
                                           float *dst, size_t count);

/* Lets the OS drop the file's pages from memory now (they are read back
 * from the file if touched again): for callers that have copied what they
 * need, so the mapping stops counting in the process's memory. */
KILN_API void kiln_weights_drop_pages(kiln_weights *w);

/* The same for the whole pages of [p, p + bytes) if they lie in w's
 * mapping; returns 1 if they did. */
KILN_API int kiln_weights_drop_range(kiln_weights *w, const void *p, size_t bytes);

/* Checks that the file still has the size and modification time it had at
 * open. A mapped file's bytes are read from the file whenever they are not
 * resident, so one truncated while open would fault (SIGBUS) on the next
 * read past its end, and one rewritten in place would change under the
 * reader; call this before reading after a while. A file renamed over the
 * path does not count (w keeps the one it opened). Errors: KILN_ERR_IO
 * naming the file and what changed. Thread-safe. */
KILN_API kiln_status kiln_weights_check(const kiln_weights *w);

/* The "__metadata__" string pairs of the header, in file order. The strings
 * live as long as w. */
KILN_API size_t kiln_weights_metadata_count(const kiln_weights *w);
KILN_API void kiln_weights_metadata(const kiln_weights *w, size_t index,
                                    const char **key, const char **value);
/* The value for key, or NULL. */
KILN_API const char *kiln_weights_metadata_get(const kiln_weights *w, const char *key);


/* ---- limits ---------------------------------------------------------------
 * What a request may ask for; every entry point refuses values outside
 * these with KILN_ERR_INVALID and a message naming the field and range. */

#define KILN_MIN_SIZE 64          /* width and height, pixels */
#define KILN_MAX_SIZE 2048
#define KILN_SIZE_MULTIPLE 8
#define KILN_MAX_STEPS 150
#define KILN_MAX_CFG 30.0f        /* classifier-free guidance scale, 0 to this */
#define KILN_MAX_IMAGES 64        /* images per request */
#define KILN_MAX_PROMPT_BYTES 4096
#define KILN_MAX_INIT_PIXELS (4096 * 4096)

/* ---- engine ---------------------------------------------------------------- */

typedef struct kiln_engine kiln_engine;

typedef struct kiln_engine_options {
    int threads;       /* 0: one per core this process may use */
    size_t max_memory; /* bytes a generation may plan for; 0: 80% of the memory the OS
                          reports available when the engine starts; SIZE_MAX: no limit */
} kiln_engine_options;

KILN_API void kiln_engine_options_defaults(kiln_engine_options *o);

/* An engine owns the thread pool that every model it loads runs on.
 * Errors: KILN_ERR_NOMEM, KILN_ERR_INVALID. */
KILN_API kiln_status kiln_engine_create(const kiln_engine_options *o, kiln_engine **out);
KILN_API void kiln_engine_destroy(kiln_engine *e);
KILN_API int kiln_engine_threads(const kiln_engine *e);

/* ---- optimizations -----------------------------------------------------------
 * The switches behind kiln's speed, each a real alternative path of the
 * engine, so that any one can be turned off and measured (kiln bench
 * --ablate). Every combination makes the same pictures within the
 * tolerances tests/test_optimizations.c states (vae_tiling within those
 * of tests/test_vae_tiling.c).
 *
 * Two of them are bound to objects made earlier: threads to the engine
 * (kiln_engine_options.threads) and precision to the model
 * (kiln_model_options.precision). A request that asks for other values runs
 * with the engine's and the model's, and its result says so. */

typedef enum kiln_precision {
    KILN_PRECISION_F32,
    KILN_PRECISION_F16,  /* weights as IEEE half, widened to f32 in the matrix kernels */
    KILN_PRECISION_BF16, /* weights as bfloat16, widened to f32 in the matrix kernels; where the
                            CPU's AVX512_BF16 dot products measure faster than its f32 FMAs,
                            multiplied by them instead, the activations rounded to bf16 too
                            (KILN_BF16_DOT=on|off|auto overrides the choice) */
    KILN_PRECISION_COUNT
} kiln_precision;

typedef enum kiln_attention {
    KILN_ATTENTION_TILED, /* fused kernel, online softmax over key blocks: memory O(tile) */
    KILN_ATTENTION_PLAIN, /* per head: the whole score matrix, softmax, then P v (memory O(q x kv)) */
    KILN_ATTENTION_COUNT
} kiln_attention;

typedef enum kiln_layout {
    KILN_LAYOUT_NHWC, /* channels last: kiln's activations and kernels */
    KILN_LAYOUT_NCHW, /* channels first, as PyTorch by default: graphs rewritten, im2col convolutions, no Winograd */
    KILN_LAYOUT_COUNT
} kiln_layout;

typedef enum kiln_memory {
    KILN_MEMORY_PLAN,  /* one arena, every activation at an offset planned once per graph */
    KILN_MEMORY_ALLOC, /* malloc each output before its node runs, free it after its last reader */
    KILN_MEMORY_COUNT
} kiln_memory;

typedef struct kiln_optimizations {
    kiln_attention attention;
    int attention_tile;       /* queries per tile of the tiled kernel; 0: the kernel's own choice */
    kiln_layout layout;
    int fusion;               /* 1: fused ops (group norm + SiLU in one pass, residual adds and nearest
                                 upsampling inside the convolutions); 0: separate passes */
    int winograd;             /* 1: 3x3 stride-1 convolutions with enough 4x4 output tiles by
                                 Winograd F(4x4, 3x3), a quarter of the multiplies; 0: every
                                 convolution by the direct kernel */
    kiln_memory memory;
    kiln_precision precision; /* must match the model's (see above) */
    int fast_math;            /* 1: vector polynomials for exp and erf (bounds in the kernels'
                                 vmath headers); 0: libm's expf and erff */
    int threads;              /* 0: the engine's; otherwise must match the engine's (see above) */
    int vae_tiling;           /* 1: the VAE decodes the latent in overlapping tiles, blended with linear
                                 ramps, so its activations are sized for one tile, not the image (an
                                 image within one tile is decoded whole); its group norms use the
                                 whole latent's statistics, estimated by one run more. Pixels differ
                                 slightly from a whole decode: each tile's mid-block attention sees
                                 only that tile (debug mode reports the PSNR against untiled) */
    int vae_tile;             /* image pixels per tile side: 64 to 2048 in multiples of 8 (and of the
                                 VAE's factor); 0: 256. Neighbouring tiles overlap by a quarter tile */
} kiln_optimizations;

/* The switches, in the order results report them. */
typedef enum kiln_opt {
    KILN_OPT_ATTENTION,
    KILN_OPT_ATTENTION_TILE,
    KILN_OPT_LAYOUT,
    KILN_OPT_FUSION,
    KILN_OPT_WINOGRAD,
    KILN_OPT_MEMORY,
    KILN_OPT_PRECISION,
    KILN_OPT_FAST_MATH,
    KILN_OPT_THREADS,
    KILN_OPT_VAE_TILING,
    KILN_OPT_VAE_TILE,
    KILN_OPT_COUNT
} kiln_opt;

/* The best configuration for this machine: tiled attention at the kernel's
 * own tile (the AVX-512 kernel's where the CPU has it), NHWC, fusion on,
 * Winograd convolutions on, the static memory plan, fast math on, all cores. Precision stays f32, the
 * reference the others are held to: f16 and bf16 change the pictures
 * (within test_optimizations.c's tolerances), so they are asked for, not
 * defaulted to; `kiln bench --ablate` measures what they gain here.
 * Thread-safe. */
KILN_API void kiln_optimizations_defaults(kiln_optimizations *o);

/* A switch's name as the CLI (with '-' for '_'), the HTTP API and the
 * reports spell it: "attention", "attention_tile", "layout", "fusion",
 * "winograd", "memory", "precision", "fast_math", "threads", "vae_tiling", "vae_tile";
 * and the values it takes ("tiled, plain", "on, off", "0 (automatic) or 1
 * to 1024"). Static strings; NULL for opt out of range. */
KILN_API const char *kiln_opt_name(kiln_opt opt);
KILN_API const char *kiln_opt_allowed(kiln_opt opt);

/* Sets one switch from text: name as kiln_opt_name gives it (or with '-'),
 * value as kiln_opt_allowed lists ("on"/"off" also as "true"/"false"/"1"/
 * "0"). Errors: KILN_ERR_INVALID naming the switch and its allowed values;
 * *o is untouched then. Thread-safe. */
KILN_API kiln_status kiln_optimizations_set(kiln_optimizations *o, const char *name, const char *value);

/* The value of one switch as text ("plain", "on", "48"), into buf. */
KILN_API void kiln_optimizations_get(const kiln_optimizations *o, kiln_opt opt, char *buf, size_t size);

KILN_API const char *kiln_precision_name(kiln_precision p); /* "f32", "f16", "bf16" */

/* What was asked of one switch, what ran, and why they differ. */
typedef struct kiln_opt_report {
    char asked[24], active[24]; /* as kiln_optimizations_get writes them */
    int available;              /* 1: what was asked for is what ran */
    char note[224];             /* why not, or how it runs on this machine; "" when nothing to say */
} kiln_opt_report;

/* ---- models ---------------------------------------------------------------- */

typedef struct kiln_model kiln_model;

typedef struct kiln_model_options {
    const char *tokenizer_dir; /* NULL: tokenizer/ beside the file or in the folder */
    const char *precision;     /* how weights are kept for the matrix kernels: "f32" (default), "f16"
                                  or "bf16" (half the memory and bandwidth; widened to f32 as the
                                  kernels load them: activations and sums stay f32, except for
                                  bf16 on CPUs with fast AVX512_BF16, see KILN_PRECISION_BF16) */
} kiln_model_options;

KILN_API void kiln_model_options_defaults(kiln_model_options *o);

/* Loads an SD 1.x/2.x checkpoint: a .safetensors file in the original
 * single-file layout, or a diffusers folder. The architecture is read from
 * the tensor shapes. Errors name the file and the tensor at fault
 * (KILN_ERR_IO, KILN_ERR_FORMAT, KILN_ERR_SHAPE, KILN_ERR_NOMEM). The model
 * runs on e's threads; e must outlive it. One generation at a time per
 * model: calls on one model are not thread-safe. */
KILN_API kiln_status kiln_model_load(kiln_engine *e, const char *path, const kiln_model_options *o,
                                     kiln_model **out);
KILN_API void kiln_model_destroy(kiln_model *m);

typedef struct kiln_model_info {
    const char *name;           /* file name without extension */
    const char *path;
    int native_resolution;      /* the default width and height */
    int default_steps;
    float default_cfg;
    const char *default_sampler;
    int v_prediction;
    int unet_channels, text_width, text_layers, vocab_size;
    uint64_t parameters;
} kiln_model_info;

/* The strings live as long as m. */
KILN_API void kiln_model_get_info(const kiln_model *m, kiln_model_info *out);

/* The precision m's weights were loaded in. */
KILN_API kiln_precision kiln_model_precision(const kiln_model *m);

/* What a request asking for `asked` (NULL: kiln_optimizations_defaults
 * with m's precision and its engine's threads) would run with on m, and
 * the report per switch (report[KILN_OPT_COUNT]). Errors: KILN_ERR_INVALID
 * for a value out of range, naming the switch. */
KILN_API kiln_status kiln_model_optimizations(const kiln_model *m, const kiln_optimizations *asked,
                                              kiln_optimizations *active, kiln_opt_report *report);

/* ---- generation ------------------------------------------------------------- */

typedef struct kiln_progress {
    int step, steps;        /* sampler steps done in this batch, of */
    int images_done, images; /* finished images, of the request's */
    double elapsed_s, eta_s;
    const char *stage;      /* "text", "denoise", "decode", "encode"; "validate" in debug mode */
} kiln_progress;

/* Return non-zero to cancel: generation stops after the current step and
 * kiln_generate returns KILN_ERR_CANCELLED, with the images finished so far
 * in the result. */
typedef int (*kiln_progress_fn)(void *user, const kiln_progress *p);

struct kiln_image;

/* One slice of a generation's timeline, handed to kiln_trace_fn as it
 * ends: a graph node that ran, or a stage enclosing nodes. */
typedef struct kiln_trace_event {
    const char *name;  /* a node's name ("input_blocks.1.1/attn1.to_q"), or a stage's: "text",
                          "encode", "denoise", "step N" (1-based, per micro-batch), "decode" */
    const char *kind;  /* a node's op kind ("conv2d", "attention", ...), or "stage" */
    const char *graph; /* a node's graph: "text", "unet", "decoder", "encoder"; NULL for stages */
    double start_s;    /* seconds since kiln_generate began (monotonic clock) */
    double dur_s;
    int batch;         /* micro-batch index from 0; -1 outside them (text, encode) */
    int step;          /* sampler step from 1 within the micro-batch; 0 outside steps */
    double flops;      /* a node's floating-point operations (a multiply-add counts 2), as the op
                          profile counts them; 0 for stages and for ops it does not count */
} kiln_trace_event;

/* Receives the timeline: called for every node that computes (inputs and
 * weights are left out) and every stage, on the thread that called
 * kiln_generate, as each ends; ev and its strings are borrowed for the
 * call. Costs a clock read per node. */
typedef void (*kiln_trace_fn)(void *user, const kiln_trace_event *ev);

/* Called with each image as soon as it is finished (pixels, seed and
 * parameters set; index counts from 0 in the request's order), on the
 * thread that called kiln_generate, before the next batch starts: to save
 * or show images as they come. img is borrowed for the call (the result
 * keeps it). Return non-zero to cancel, as from kiln_progress_fn. */
typedef int (*kiln_image_fn)(void *user, const struct kiln_image *img, int index);

typedef struct kiln_request {
    const char *prompt;
    const char *negative_prompt; /* NULL or "": none */
    int width, height;           /* 0: the model's native resolution */
    int steps;                   /* 0: the model's default */
    float cfg_scale;             /* < 0: the model's default; 0 or 1 turns guidance off */
    const char *sampler;         /* "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "lcm" or an
                                    AUTOMATIC1111 name; NULL: the model's default */
    uint64_t seed;               /* image i uses seed + i */
    const char *rng;             /* "torch-cpu" (default) or "philox" */
    int num_images;              /* 1.. KILN_MAX_IMAGES */
    int batch_size;              /* images per UNet batch at most; 0: as many as the memory budget allows */
    /* img2img: an RGB image (rows top to bottom), scaled to width x height */
    const uint8_t *init_rgb;
    int init_width, init_height;
    float strength;              /* 0 < strength <= 1 */
    /* the switches to run with; NULL: kiln_optimizations_defaults with the
     * model's precision and the engine's threads. Graphs are rebuilt when
     * these change from one request to the next. */
    const kiln_optimizations *optimizations;
    kiln_progress_fn on_progress;
    void *user;
    kiln_image_fn on_image;      /* NULL, or called per finished image with user */
    kiln_trace_fn on_trace;      /* NULL, or called per node and stage with user (a timeline:
                                    `kiln generate --trace` writes it as Chrome trace JSON) */
    /* 1: debug mode (kiln_debug_report in the result): every node's output
     * is checked for NaN and Inf as it runs, and the request is run again
     * on the f32 reference path to measure how far the images are from it.
     * Costs a scan of every activation, and the reference generation (slower:
     * no fused or tiled kernels; for a model loaded at f16 or bf16, a second
     * copy of the model loaded at f32). The images returned are the same,
     * bit for bit, as without it. 0: off */
    int debug;
} kiln_request;

KILN_API void kiln_request_defaults(kiln_request *r);

typedef struct kiln_image {
    int width, height;
    uint8_t *rgb;         /* width * height * 3 bytes, owned by the result */
    uint64_t seed;
    char *parameters;     /* the AUTOMATIC1111 "parameters" text for this image */
} kiln_image;

typedef struct kiln_timings {
    double total_s, text_s, denoise_s, decode_s, encode_s;
    double unet_s;        /* all UNet evaluations */
    int unet_evals;
    size_t activation_bytes; /* the largest graph arena used (under alloc: the UNet's
                                largest sum of live activations) */
    size_t scratch_bytes;    /* the UNet's kernel scratch (attention tiles or score matrix) */
} kiln_timings;

/* Time and work of one kind of graph operation over a generation, every
 * graph it ran (text encoder, UNet, VAE) added up, from a clock read around
 * each node (always on: it costs well under 1% of a generation). */
typedef struct kiln_op_profile {
    const char *name; /* "conv2d", "linear", "attention", ...: static */
    double seconds;   /* wall time inside nodes of this kind */
    double gflop;     /* work done, 1e9 floating-point operations (a multiply-add counts 2) */
    double gflops;    /* gflop / seconds: 0 for kinds without matrix work */
    double share;     /* seconds / the seconds of every kind, 0 to 1 */
    int64_t nodes;    /* nodes of this kind run */
} kiln_op_profile;

/* How a request was laid out in memory (from the static memory plans). */
typedef struct kiln_plan {
    int batch, micro_batches;
    size_t weight_bytes, activation_bytes, bytes_per_image, total_bytes, budget_bytes;
    /* activation_bytes: the largest graph's arena and kernel scratch (text
     * encoder, UNet at the batch, VAE decoder or encoder): they run one
     * after another and each gives its pages back when done, so the peak is
     * the largest, not the sum. total_bytes: weights + activation_bytes +
     * the process's allowance. */
    size_t decoder_bytes; /* the VAE decoder's arena and scratch (one tile's under vae_tiling, with the
                             buffers the tiles are blended in) */
    int vae_tiles;        /* tiles the VAE decodes each image in; 1: whole */
} kiln_plan;

/* ---- debug mode ----------------------------------------------------------- */

/* The first node, in the order the graphs ran, whose output held a NaN or
 * an Inf (graphs run: text encoder, then per batch the UNet once per
 * sampler step and the VAE decoder per image; the VAE encoder first for
 * img2img). The run is not stopped: the images come out as they would. */
typedef struct kiln_nonfinite {
    int found;            /* 0: every node's output was finite (the rest is unset) */
    char node[160];       /* its name as the graph names it: "<block>/<layer>", e.g.
                             "input_blocks.1.0/in_layers.2" (truncated to fit) */
    char op[24];          /* its op kind: "conv2d", "linear", "attention", "group_norm", ... */
    char graph[16];       /* "text_encoder", "unet", "vae_decoder" or "vae_encoder" */
    int ndim;
    int64_t shape[4];     /* of its output: [batch, h, w, c] for images, [batch, tokens, c] for
                             sequences; the UNet's batch holds the unconditional half first */
    int step;             /* unet: the sampler step of that evaluation, 0 first; -1 otherwise */
    int image;            /* unet, vae_decoder: the request's index of the (first) image it ran
                             for; -1 for the text encoder and the VAE encoder */
    int64_t count;        /* NaN and Inf values in that output */
    int64_t first_index;  /* row-major index into the output of the first of them */
    float first_value;    /* NaN, +Inf or -Inf */
} kiln_nonfinite;

/* What debug mode found. The validation runs the same request (prompt,
 * seeds, sampler, sizes, batch) on the f32 reference path: plain
 * attention, fusion off, activations allocated as they go, libm's exp and
 * erf, f32 weights (a model loaded at f16 or bf16 is loaded again at f32
 * from the same path for it, and released after), and compares. */
typedef struct kiln_debug_report {
    int enabled;               /* the request asked for debug mode */
    kiln_nonfinite nonfinite;  /* of the run whose images are returned */
    double check_s;            /* seconds that run spent checking for NaN/Inf (in its timings) */
    int validated;             /* 1: the reference ran and the numbers below are set */
    char reference[256];       /* how the reference ran, or why it did not ("cancelled", the error) */
    int images;                /* images compared (the result's count) */
    /* per image, 10 log10(255^2 / MSE) over the RGB bytes; INFINITY when
     * the images are identical (MSE 0) */
    double psnr_db[KILN_MAX_IMAGES];
    double psnr_min_db;        /* the lowest of them */
    double psnr_mean_db;       /* from the MSE over every image's bytes together, so that one
                                  identical image does not make it infinite; INFINITY if all are */
    double latent_max_error;   /* max |z - z_ref| over every image's final latent (the sampler's
                                  output, before the VAE), in latent units */
    double latent_max_abs;     /* max |z_ref|: the scale of that error */
    double reference_s;        /* seconds the reference took, loading included */
} kiln_debug_report;

typedef struct kiln_result {
    int count;            /* images finished (fewer than asked when cancelled) */
    kiln_image *images;
    kiln_timings timings;
    kiln_plan plan;
    int width, height, steps;
    float cfg_scale;
    const char *sampler;  /* canonical name */
    kiln_optimizations optimizations;                  /* what ran */
    kiln_opt_report optimization_report[KILN_OPT_COUNT]; /* asked, ran, why, per switch */
    kiln_op_profile *ops; /* per op kind that ran, slowest first; op_count entries, owned by the result */
    int op_count;
    int graph_runs;       /* graph evaluations the profile covers (text, each UNet eval, each decode) */
    double *step_s;       /* seconds of each sampler step (UNet evaluations, guidance, sampler update),
                             in order over the micro-batches; step_count entries, owned by the result */
    int step_count;
    kiln_debug_report debug;   /* enabled 0 unless the request asked for debug mode */
} kiln_result;

/* Runs a request. On KILN_OK or KILN_ERR_CANCELLED, *out holds the images
 * made (free with kiln_result_destroy); on other errors *out is untouched.
 * In debug mode the reference runs after the images are finished (and
 * handed to on_image); its progress reaches on_progress with stage
 * "validate", and a cancel there returns KILN_ERR_CANCELLED with every image
 * in the result and debug.validated 0. A reference that fails (memory) is
 * not an error of the call: debug.reference says why.
 * Errors: KILN_ERR_INVALID (names the field and its allowed range; a
 * request that cannot fit the engine's memory budget is refused here,
 * before any large allocation, with the bytes it needs and what would make
 * it fit), KILN_ERR_NOMEM, KILN_ERR_CANCELLED. */
KILN_API kiln_status kiln_generate(kiln_model *m, const kiln_request *r, kiln_result **out);
KILN_API void kiln_result_destroy(kiln_result *res);

/* The memory plan kiln_generate would make for r on m (the batch that fits
 * the engine's budget, the bytes), without generating anything. Errors: as
 * kiln_generate's checks of the request, before it allocates. */
KILN_API kiln_status kiln_model_plan(kiln_model *m, const kiln_request *r, kiln_plan *out);

/* Writes one image as PNG with its parameters in a "parameters" text chunk,
 * atomically; never replaces an existing file unless overwrite is set. */
KILN_API kiln_status kiln_image_write_png(const kiln_image *img, const char *path, int overwrite);

/* Reads a PNG as RGB (malloc'd; the caller frees). */
KILN_API kiln_status kiln_image_read_png(const char *path, uint8_t **rgb, int *width, int *height);

/* ---- tuning cache ----------------------------------------------------------
 * What `kiln tune` measured best on this machine, kept across runs in a JSON
 * file ($XDG_CACHE_HOME/kiln/tuning.json, else $HOME/.cache/kiln/tuning.json)
 * with one entry per (CPU model, kernel level, model hash, width x height).
 * An entry made on another CPU or ISA level, or for another version of the
 * model file, is not used. */

/* The model hash: SHA-256 (hex) of the file size, the whole safetensors
 * header (every tensor's name, dtype, shape and offsets) and 64 blocks of
 * 4 KiB spread evenly over the tensor data plus its last 4 KiB (all of the
 * data when it is under 256 KiB). It reads well under 1 MB of any
 * checkpoint, so it costs milliseconds for a 4 GB file, and it changes when
 * the file is retrained, pruned, converted or truncated; an edit confined
 * to bytes between the samples goes unseen. A diffusers folder hashes its
 * unet, vae and text_encoder files in that order. Stable across runs and
 * machines (it does not depend on paths or times). */
#define KILN_MODEL_HASH_HEX 65

typedef struct kiln_tuning {
    char cpu[64];                     /* kiln_cpu_info.model */
    char isa[16];                     /* kiln_isa_name of the level in use */
    char model_hash[KILN_MODEL_HASH_HEX];
    char model_path[1024];            /* absolute; says "the model changed" when its hash differs */
    int width, height;                /* pixels */
    kiln_optimizations optimizations; /* the chosen switches, precision and threads included */
    int batch_size;                   /* images per UNet batch */
    double images_per_s;              /* as measured by kiln tune */
    int64_t measured_at;              /* Unix seconds */
    char kiln_version[16];
} kiln_tuning;

typedef enum kiln_tuning_match {
    KILN_TUNING_FOUND,         /* an entry for this CPU, ISA, model and size */
    KILN_TUNING_MISSING,       /* none for this model and size */
    KILN_TUNING_CPU_CHANGED,   /* one for this model and size, measured on another CPU or ISA level */
    KILN_TUNING_MODEL_CHANGED, /* one for this path and size, but the file's hash differs */
    KILN_TUNING_MATCH_COUNT
} kiln_tuning_match;

/* The cache file's path into buf. Errors: KILN_ERR_INVALID (neither
 * XDG_CACHE_HOME nor HOME is set, or buf is too small). Thread-safe. */
KILN_API kiln_status kiln_tuning_cache_path(char *buf, size_t size);

/* The model hash above of a .safetensors file or a diffusers folder, as 64
 * hex digits into out. Errors: KILN_ERR_IO, KILN_ERR_FORMAT (not a
 * safetensors file), naming the file. Thread-safe. */
KILN_API kiln_status kiln_model_hash(const char *path, char out[KILN_MODEL_HASH_HEX]);

/* Fills key's cpu, isa, model_hash, model_path, width and height for the
 * model at model_path on this machine (the rest zero). Errors: those of
 * kiln_model_hash. */
KILN_API kiln_status kiln_tuning_key(const char *model_path, int width, int height, kiln_tuning *key);

/* Looks up key (from kiln_tuning_key) in the cache file at cache_path (NULL:
 * kiln_tuning_cache_path). *match says what was found; *out is the entry for
 * FOUND, and the stale one for CPU_CHANGED and MODEL_CHANGED. A missing file
 * is KILN_OK with MISSING. Errors: KILN_ERR_FORMAT for a file that is not a
 * valid cache (the message names it; nothing is changed), KILN_ERR_IO.
 * Reads only; safe beside other readers and writers. */
KILN_API kiln_status kiln_tuning_lookup(const char *cache_path, const kiln_tuning *key, kiln_tuning *out,
                                        kiln_tuning_match *match);

/* Stores t in the cache file (NULL: kiln_tuning_cache_path), replacing the
 * entry with the same key and keeping the others; makes the folder if
 * missing. The file is written to a temporary name and renamed, so readers
 * see the old or the new one, never half; a file that is not a valid cache
 * is replaced. With two writers at once, the last rename wins. Errors:
 * KILN_ERR_IO naming the path, KILN_ERR_NOMEM. */
KILN_API kiln_status kiln_tuning_store(const char *cache_path, const kiln_tuning *t);

/* One line describing t's configuration: "batch 2, bf16, 2 threads,
 * attention tiled (tile auto), 3.1 images/s". */
KILN_API void kiln_tuning_describe(const kiln_tuning *t, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */

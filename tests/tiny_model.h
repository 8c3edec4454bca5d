/*
 * tiny_model.h - the tiny random-weight SD model the end-to-end tests run
 * (random_model's "tiny" preset, F32, seed 7, the CLIP tokenizer from
 * ../shared/data), written once per test process into its temporary folder.
 */
#ifndef KILN_TESTS_TINY_MODEL_H
#define KILN_TESTS_TINY_MODEL_H

#include "kiln.h"

/* Its path, or NULL with a failure recorded. Lives until tiny_model_free. */
const char *tiny_model(void);
void tiny_model_free(void);

/* An engine of its own (threads) with a model loaded from path at
 * precision (NULL: f32), as an application would hold them. */
typedef struct model_session {
    kiln_engine *engine;
    kiln_model *model;
} model_session;

/* 0, or -1 with a failure recorded naming the model and the precision
 * (path NULL, as tiny_model gives when it failed: -1, nothing recorded). */
int model_session_open(model_session *s, const char *path, int threads, const char *precision);
void model_session_close(model_session *s);

#endif

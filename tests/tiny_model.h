/*
 * tiny_model.h - the tiny random-weight SD model the end-to-end tests run
 * (random_model's "tiny" preset, F32, seed 7, the CLIP tokenizer from
 * ../shared/data), written once per test process into its temporary folder.
 */
#ifndef KILN_TESTS_TINY_MODEL_H
#define KILN_TESTS_TINY_MODEL_H

/* Its path, or NULL with a failure recorded. Lives until tiny_model_free. */
const char *tiny_model(void);
void tiny_model_free(void);

#endif

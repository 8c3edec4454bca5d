#include "pipeline/parameters.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

kiln_status parameters_format(const image_parameters *p, char **out)
{
    size_t size = strlen(p->prompt) + (p->negative_prompt ? strlen(p->negative_prompt) : 0) + 512 +
                  (p->model_name ? strlen(p->model_name) : 0);
    char *text = malloc(size);
    if (!text)
        return err_set(KILN_ERR_NOMEM, "cannot allocate the parameters text");
    size_t n = (size_t)snprintf(text, size, "%s\n", p->prompt);
    if (p->negative_prompt && *p->negative_prompt)
        n += (size_t)snprintf(text + n, size - n, "Negative prompt: %s\n", p->negative_prompt);
    n += (size_t)snprintf(text + n, size - n, "Steps: %d, Sampler: %s, CFG scale: %g, Seed: %llu, Size: %dx%d",
                          p->steps, sampler_a1111_name(p->sampler, p->karras), (double)p->cfg_scale,
                          (unsigned long long)p->seed, p->width, p->height);
    if (p->model_hash)
        n += (size_t)snprintf(text + n, size - n, ", Model hash: %s", p->model_hash);
    if (p->model_name)
        n += (size_t)snprintf(text + n, size - n, ", Model: %s", p->model_name);
    if (p->denoising_strength > 0)
        n += (size_t)snprintf(text + n, size - n, ", Denoising strength: %g", (double)p->denoising_strength);
    if (p->rng && strcmp(p->rng, "philox") != 0)
        n += (size_t)snprintf(text + n, size - n, ", RNG: CPU");
    snprintf(text + n, size - n, ", Version: kiln %s", kiln_version());
    *out = text;
    return KILN_OK;
}

kiln_status parameters_model_hash(const char *path, char out[11])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(KILN_ERR_IO, "%s: cannot open to hash: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc(1 << 20);
    kiln_status st = KILN_OK;
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        st = err_set(KILN_ERR_NOMEM, "cannot start a SHA-256");
        goto done;
    }
    size_t n;
    while ((n = fread(buf, 1, 1 << 20, f)) > 0)
        EVP_DigestUpdate(ctx, buf, n);
    if (ferror(f)) {
        st = err_set(KILN_ERR_IO, "%s: read failed while hashing: %s", path, strerror(errno));
        goto done;
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, digest, &len);
    for (int i = 0; i < 5; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
done:
    free(buf);
    EVP_MD_CTX_free(ctx);
    fclose(f);
    return st;
}

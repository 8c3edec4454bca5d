/*
 * main.c - the kiln command line tool: subcommand dispatch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kiln.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"bench", cmd_bench, "time the text encoder, UNet and VAE on this machine"},
    {"generate", cmd_generate, "make images from a prompt (txt2img, img2img)"},
    {"info", cmd_info, "list the tensors, sizes and metadata of a safetensors file"},
    {"serve", cmd_serve, "the web page and the HTTP API (AUTOMATIC1111-style)"},
    {"tune", cmd_tune, "measure configurations on this machine and cache the fastest (for --tuned)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: kiln <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n  kiln <command> --help   options of a command\n  kiln --version\n");
}

const char *cli_default_model(void)
{
    const char *env = getenv("KILN_MODEL");
    if (env && *env)
        return env;
#ifdef KILN_DEFAULT_MODEL
    return KILN_DEFAULT_MODEL;
#else
    return NULL;
#endif
}

int cli_fail(const char *what)
{
    fprintf(stderr, "kiln: %s: %s\n", what, kiln_last_error());
    return CLI_FAILED;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        usage(stdout);
        return CLI_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("kiln %s\n", kiln_version());
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(name, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "kiln: unknown command '%s'\n", name);
    usage(stderr);
    return CLI_USAGE;
}

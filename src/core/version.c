#include "kiln.h"

#define KILN_STR2(x) #x
#define KILN_STR(x) KILN_STR2(x)

const char *kiln_version(void)
{
    return KILN_STR(KILN_VERSION_MAJOR) "." KILN_STR(KILN_VERSION_MINOR) "." KILN_STR(KILN_VERSION_PATCH);
}

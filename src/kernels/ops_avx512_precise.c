/* ops_avx512.c with fast math off: exp and erf from libm, lane by lane
 * (vmath_avx512.h under KILN_PRECISE_MATH), everything else the same. */
#define KILN_PRECISE_MATH 1
#include "ops_avx512.c"

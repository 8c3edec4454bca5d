/* ops_avx2.c with fast math off: exp and erf from libm, lane by lane
 * (vmath_avx2.h under KILN_PRECISE_MATH), everything else the same. */
#define KILN_PRECISE_MATH 1
#include "ops_avx2.c"

/* attention_avx2.c with fast math off: the softmax's exp from libm, lane
 * by lane (vmath_avx2.h under KILN_PRECISE_MATH). */
#define KILN_PRECISE_MATH 1
#include "attention_avx2.c"

/* Instantiates a type-generic C source for float and double (C has no templates).
 *
 * Define FM_TEMPLATE as the source's file name, then include this file. The source sees
 * FM_T (the scalar type), FM_INT (an integer as wide), FM_LANES (scalars per 32-byte
 * vector) and FM_NAME(n) (n with the type's suffix: n_f or n_d). No include guard: every
 * inclusion instantiates FM_TEMPLATE again.
 */
#define FM_T float
#define FM_INT int
#define FM_LANES 8
#define FM_NAME(n) n##_f
#include FM_TEMPLATE
#undef FM_T
#undef FM_INT
#undef FM_LANES
#undef FM_NAME

#define FM_T double
#define FM_INT long long
#define FM_LANES 4
#define FM_NAME(n) n##_d
#include FM_TEMPLATE
#undef FM_T
#undef FM_INT
#undef FM_LANES
#undef FM_NAME

/*
 * rng.c: PCG32 XSH-RR 64/32. Our own implementation of the published
 * algorithm; checked against the reference demo outputs in tests/test_rng.c.
 * No floating point here: anything built on it stays bit-identical across
 * compilers and ranks.
 */
#include "ccq/rng.h"

#define PCG_MULT UINT64_C(6364136223846793005)

uint32_t rng_next(rng_pcg32 *r)
{
    uint64_t old = r->state;
    r->state = old * PCG_MULT + r->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31u));
}

void rng_init(rng_pcg32 *r, uint64_t seed, uint64_t seq)
{
    r->state = 0u;
    r->inc = (seq << 1u) | 1u;
    rng_next(r);
    r->state += seed;
    rng_next(r);
}

/* splitmix64 finaliser: a bijective integer mix, so distinct inputs stay distinct. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void rng_init_keyed(rng_pcg32 *r, uint64_t seed, uint64_t k1, uint64_t k2, uint64_t k3)
{
    uint64_t h = mix64(seed ^ UINT64_C(0x6363712d726e6721)); /* "ccq-rng!" */
    h = mix64(h ^ k1);
    h = mix64((h + UINT64_C(0x9e3779b97f4a7c15)) ^ k2);
    h = mix64((h + UINT64_C(0x9e3779b97f4a7c15)) ^ k3);
    /* The stream (inc) carries the whole key; the state start is mixed too. */
    rng_init(r, mix64(h ^ seed), h);
}

uint32_t rng_bounded(rng_pcg32 *r, uint32_t bound)
{
    /* Reject the lowest (2^32 mod bound) values so every residue is equally likely. */
    uint32_t threshold = (0u - bound) % bound;
    for (;;) {
        uint32_t x = rng_next(r);
        if (x >= threshold) return x % bound;
    }
}

void rng_advance(rng_pcg32 *r, uint64_t delta)
{
    /* Brown, "Random number generation with arbitrary strides" (1994):
     * compose the affine map s -> a*s + c with itself by squaring. */
    uint64_t cur_mult = PCG_MULT, cur_plus = r->inc;
    uint64_t acc_mult = 1u, acc_plus = 0u;
    while (delta > 0) {
        if (delta & 1u) {
            acc_mult *= cur_mult;
            acc_plus = acc_plus * cur_mult + cur_plus;
        }
        cur_plus = (cur_mult + 1u) * cur_plus;
        cur_mult *= cur_mult;
        delta >>= 1u;
    }
    r->state = acc_mult * r->state + acc_plus;
}

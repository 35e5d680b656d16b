/*
 * rng.h: PCG32 (XSH-RR 64/32, O'Neill 2014), ccq's only source of randomness.
 *
 * State is explicit (pcg-c's `_r` style): there is no global generator. Each
 * use derives its own stream from what it is for (seed, generation,
 * individual) with rng_init_keyed, never from a rank or the clock, so any
 * rank can reproduce any draw. rng_advance skips ahead exactly in O(log n).
 * Outputs match the reference pcg32 demo bit for bit (tests/test_rng.c).
 */
#ifndef CCQ_RNG_H
#define CCQ_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t state;
    uint64_t inc; /* stream selector, always odd */
} rng_pcg32;

/* pcg32_srandom_r: seed the state, select stream `seq` (2^63 streams). */
void rng_init(rng_pcg32 *r, uint64_t seed, uint64_t seq);

/* A stream keyed by purpose: seed plus up to three key words (e.g.
 * generation, individual). Distinct keys give distinct streams; the mixing is
 * a fixed integer hash, identical on every platform. */
void rng_init_keyed(rng_pcg32 *r, uint64_t seed, uint64_t k1, uint64_t k2, uint64_t k3);

/* Next 32-bit output. */
uint32_t rng_next(rng_pcg32 *r);

/* Uniform integer in [0, bound), bound >= 1, without modulo bias
 * (pcg32_boundedrand_r's rejection rule, so it matches the reference). */
uint32_t rng_bounded(rng_pcg32 *r, uint32_t bound);

/* Skip delta steps ahead (delta taken modulo 2^64, so "minus n" goes back). */
void rng_advance(rng_pcg32 *r, uint64_t delta);

#endif

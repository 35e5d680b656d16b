/*
 * feval.h: the fitness of the context and of its variants on batches of
 * training images: the search's whole cost, and the one place that decides
 * how a forward pass is spent.
 *
 * A batch is gathered from the train split by position in a pool (an index
 * permutation), with the teacher's probabilities when the fitness is
 * distillation. feval_items evaluates the context and individuals (variants
 * of the context inside one subcomponent) on it. The batch's images are cut
 * into `size` contiguous equal shares and this rank evaluates every item on
 * share `rank` (so the context's prefix, below, is computed once over all
 * ranks, not once per rank), returning integer partial sums that the caller
 * adds over ranks: the totals do not depend on the rank count.
 *
 * Incremental evaluation (exact): every variant differs from the context
 * only at and after the earliest node its subcomponent touches, so the
 * context's tensors crossing that cut are computed once per batch chunk
 * (qnet_cache_fill) and every item runs only the nodes after it
 * (qnet_forward_cached). Individuals are written into the context by
 * patching levels in place and undone the same way. With incremental off
 * every item runs the whole network: the values are identical, bit for bit.
 *
 * Paired statistics: for each item, the sum and the sum of squares of the
 * per-image fitness differences to the context on the same images (exact
 * integers), which the acceptance test needs. It knows nothing of MPI or of
 * how individuals are drawn (a callback samples them).
 */
#ifndef CCQ_FEVAL_H
#define CCQ_FEVAL_H

#include <stdint.h>

#include "ccq/data.h"
#include "ccq/fit.h"
#include "ccq/fnet.h"
#include "ccq/genome.h"
#include "ccq/qnet.h"

typedef enum { FEVAL_XENT, FEVAL_ACCURACY, FEVAL_DISTILL } feval_kind;

typedef struct {
    genome *g;
    const fit_ctx *fit;
    const model *teacher_model; /* float model (distillation only) */
    const data_split *train;
    feval_kind kind;
    int incremental;
    int cap;                 /* images per chunk (the cache's capacity) */
    qnet_cache cache;
    /* the gathered batch */
    int n;
    uint8_t *img;
    int32_t *lab, *idx;
    int max_n;
    int32_t *teacher;        /* [train.n][classes] Q16 probabilities, computed when first needed */
    uint8_t *teacher_done;
    /* scratch */
    int32_t *logits;         /* [cap][classes] */
    int64_t *ctx_img;        /* [max_n] the context's per-image fitness */
    uint8_t *ctx_ok;         /* [max_n] and whether it predicts the image's label */
    int8_t *ind, *saved;     /* [max_sub] */
    double t_forward;        /* seconds in forward passes (reports only) */
} feval;

/* Sizes: batches of at most max_n images, subcomponents of at most max_sub
 * weights; the cache holds `cap` images (at least 1) of the model's worst cut. */
void feval_init(feval *e, genome *g, const fit_ctx *fit, const data_split *train, const model *teacher_model,
                feval_kind kind, int incremental, int cap, int max_n, int max_sub);
void feval_free(feval *e);

/* Gathers n images: pool[(pos + j) % pool_n], j < n. */
void feval_gather(feval *e, const int32_t *pool, int pool_n, int64_t pos, int n);

/* The context's fitness on gathered images [off, off + n) (whole network);
 * adds its correct predictions to *correct and (if given) the sum of the
 * squares of its per-image fitness to *sumsq. */
int64_t feval_context(feval *e, int off, int n, int64_t *correct, int64_t *sumsq);

/* Writes individual `item` (>= 0) of the current generation: m levels for the subcomponent. */
typedef void (*feval_sample_fn)(void *arg, int item, int m, int8_t *out);

/* Evaluates items[0..n_items) on gathered images [off, off + n) (the whole
 * batch, or one stage of a race): items[k] < 0 is the context, otherwise an
 * individual drawn by sample(). sub[0..m) is the subcomponent. The images
 * are cut into `size` contiguous shares; this rank's share of the passes, as
 * partial sums:
 *   out[k]                       fitness of item k (lower is better)
 *   out[n_items]                 correct predictions of the context items
 *   out[n_items + 1 + k]         sum over images of (fitness of k - fitness of the context)   (paired only)
 *   out[2 n_items + 1 + k]       sum of the squares of those differences                      (paired only)
 * out needs 3 n_items + 1 entries (all written). The context stays as it was. */
void feval_items(feval *e, const int *items, int n_items, const int64_t *sub, int m, feval_sample_fn sample,
                 void *arg, int paired, int off, int n, int rank, int size, int64_t *out);

/* Bytes the cache holds. */
size_t feval_cache_bytes(const feval *e);

#endif

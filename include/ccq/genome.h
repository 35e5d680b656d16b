/*
 * genome.h: the search variables of a quantized network: every weight of
 * every conv/linear node and, when searched, every entry of its codebook,
 * as one global index space 0..n_w-1, layer after layer in node order
 * (layer l holds [layer_start[l], layer_start[l+1]): its weights, then from
 * layer_cb[l] its codebook entries, [Cout][2^bits] in order).
 *
 * A weight's value is its level on a uniform grid, or, in a layer with
 * learned levels (model_node.codebook), its code: the index of its level in
 * its channel's codebook. A codebook entry's value is the int8 level it
 * holds: changing it moves every weight of the channel with that code.
 * Everything above the genome (EDA, subcomponents, checkpoints) sees values
 * only. The search units are the pieces a subcomponent of one layer may
 * come from: a layer's weights, and its codebook entries as a unit of their
 * own (so a subcomponent holds codes or level values, never both).
 *
 * The context's levels live where the engine reads them: the model's
 * levels arrays, and the qnet built from that model, kept in step by
 * patching single levels in place (qnet_set_level), never by repacking
 * whole layers per individual. It knows nothing of the EDA, the fitness or
 * MPI.
 */
#ifndef CCQ_GENOME_H
#define CCQ_GENOME_H

#include <stdint.h>

#include "ccq/model.h"
#include "ccq/qnet.h"

typedef struct {
    model *m;            /* the context (levels written here) */
    qnet *q;             /* built from m */
    int n_layers;
    int *layer_node;     /* [n_layers] model node of each searchable layer */
    int64_t *layer_start; /* [n_layers + 1] */
    int64_t *layer_cb;    /* [n_layers] first codebook variable of layer l (layer_start[l + 1]: none) */
    int64_t n_w;          /* variables */
    int n_units;
    int64_t *unit_start;  /* [n_units + 1] a layer's weights, then its codebook entries if searched */
} genome;

/* codebooks: the codebook entries of learned layers are variables too. */
void genome_init(genome *g, model *m, qnet *q, int codebooks);
void genome_free(genome *g);

/* The layer holding variable w. */
int genome_layer_of(const genome *g, int64_t w);
/* The earliest model node any of idx[0..n) belongs to: where a forward pass
 * of a variant of the context must start. */
int genome_first_node(const genome *g, const int64_t *idx, int n);

void genome_get(const genome *g, const int64_t *idx, int n, int8_t *out);
/* Writes levels v[t] at idx[t] into the model and the engine (in place). */
void genome_set(genome *g, const int64_t *idx, int n, const int8_t *v);

/* Every value, [n_w], and back (the latter repacks every layer: set-up and resume only). */
void genome_save_all(const genome *g, int8_t *out);
void genome_load_all(genome *g, const int8_t *v);
/* Writes values v [n_w] into dst's levels and codebooks: dst has the context's structure (a
 * model_copy of it), e.g. a snapshot of the best values. */
void genome_write_model(const genome *g, const int8_t *v, model *dst);

/* Each weight's float value (the model's folded weight) in units of its
 * channel's scale, i.e. where it lies on the level grid, in Q16 (clipped to
 * +-1e9): [n_w]; for codes, where it lies between its channel's codebook
 * entries (linear between neighbours, code units); a codebook entry's is
 * its own value. What the float prior of the search reads. */
#define GENOME_POS_ONE 65536
void genome_float_pos(const genome *g, int32_t *out);

/* Each variable's range of values, [n_w] each: [-qmax, qmax] of its layer's
 * grid, [0, 2^bits - 1] for codes, and for a codebook entry the values
 * between the midpoints to its neighbours' current values (so whatever the
 * entries take within their ranges, every codebook stays strictly
 * increasing within +-127). */
void genome_range(const genome *g, int8_t *lo, int8_t *hi);

#endif

/*
 * genome.h: the search variables of a quantized network: every level of
 * every conv/linear node, as one global index space 0..n_w-1, layer after
 * layer in node order (layer l holds [layer_start[l], layer_start[l+1])).
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
    int64_t n_w;
} genome;

void genome_init(genome *g, model *m, qnet *q);
void genome_free(genome *g);

/* The layer holding weight w. */
int genome_layer_of(const genome *g, int64_t w);
/* The earliest model node any of idx[0..n) belongs to: where a forward pass
 * of a variant of the context must start. */
int genome_first_node(const genome *g, const int64_t *idx, int n);

void genome_get(const genome *g, const int64_t *idx, int n, int8_t *out);
/* Writes levels v[t] at idx[t] into the model and the engine (in place). */
void genome_set(genome *g, const int64_t *idx, int n, const int8_t *v);

/* Every level, [n_w], and back (the latter repacks every layer: set-up and resume only). */
void genome_save_all(const genome *g, int8_t *out);
void genome_load_all(genome *g, const int8_t *v);

/* Each weight's float value (the model's folded weight) in units of its
 * channel's scale, i.e. where it lies on the level grid, in Q16 (clipped to
 * +-1e9): [n_w]. What the float prior of the search reads. */
#define GENOME_POS_ONE 65536
void genome_float_pos(const genome *g, int32_t *out);

/* Largest level magnitude of each weight's layer, [n_w]. */
void genome_qmax(const genome *g, int8_t *out);

#endif

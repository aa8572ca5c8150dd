/* Blocks of streams dealt to ranks, empty passes that keep the ranks' exchanges aligned, block ends. */
#include "trainer/engine/schedule.h"

#include <stdint.h>
#include <stdio.h>

#include "layers/common.h"
#include "trainer/config/config.h"
#include "trainer/tables/tables.h"

int trainer_schedule_check(int streams, int block, int P, char *err, size_t n) {
    int64_t nblocks = trainer_nblocks(streams, block);
    if (nblocks >= P) return 0;
    if (streams < P)
        /* no block size helps: every rank needs a stream of its own */
        snprintf(err, n, "streams = %d is fewer than the %d ranks: every rank needs a stream; set "
                 "streams >= %d or run on at most %d ranks", streams, P, P, streams);
    else
        snprintf(err, n,
                 "streams = %d in blocks of stream_block = %d make %lld block%s for %d ranks: "
                 "every rank needs a block; set stream_block <= %d or use more streams",
                 streams, block, (long long)nblocks, nblocks == 1 ? "" : "s", P,
                 /* the largest block that still cuts P blocks: ceil(streams / b) >= P */
                 (streams - 1) / (P - 1));
    return -1;
}

trainer_schedule trainer_schedule_make(int streams, int block, int P, int rank) {
    LAYER_ASSERT(streams >= 1 && block >= 1 && P >= 1 && rank >= 0 && rank < P);
    trainer_schedule s = {.nstreams = streams, .block = block, .P = P, .rank = rank};
    s.nblocks = (int)trainer_nblocks(streams, block);
    s.first_block = (int)((int64_t)s.nblocks * rank / P);
    s.nmine = (int)((int64_t)s.nblocks * (rank + 1) / P) - s.first_block;
    s.first_stream = s.first_block * block;
    int end = (s.first_block + s.nmine) * block;
    s.nstreams_mine = (end < streams ? end : streams) - s.first_stream;
    s.passes = (s.nblocks + P - 1) / P; /* the largest share */
    return s;
}

void trainer_schedule_attach(const trainer_schedule *s, trainer_model *m) {
    trainer_tables_set_blocks(trainer_model_tables(m), s->nblocks);
}

void trainer_schedule_train(const trainer_schedule *s, trainer_rollout *r, trainer_model *m,
                            float *M, float grad_scale, double *block_loss) {
    LAYER_ASSERT(r->B == s->nstreams_mine);
    trainer_tables *tb = trainer_model_tables(m);
    trainer_params *params = trainer_model_params(m);
    size_t ms = trainer_model_memory_size(m);
    for (int p = 0; p < s->passes; p++) {
        int b0 = p * s->block;                          /* first stream, rank-local */
        int nb = p < s->nmine ? s->block : 0;           /* 0: an empty pass */
        if (nb > r->B - b0) nb = r->B - b0;
        double loss = trainer_rollout_block(r, m, b0, nb, M ? M + (size_t)b0 * ms : NULL, grad_scale);
        /* the rank's last pass: its own rows' gradients stay where the block left them */
        trainer_tables_block_end(tb, p == s->passes - 1);
        /* several blocks, bitwise: each one's dense gradient joins a double sum, so the step's
           sum does not depend on how blocks are dealt to ranks (fast: the blocks add into the
           float gradient) */
        if (s->nblocks > 1 && !trainer_tables_fast(tb)) trainer_params_fold(params);
        if (p < s->nmine) block_loss[s->first_block + p] = loss;
    }
}


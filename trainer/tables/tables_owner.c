/* Table store, owner strategy: the owners compute their shards' partial sums for every rank's tokens and form the row gradients from the output gradients sent to them. */
#include <stdlib.h>
#include <string.h>

#include "layers/common.h"
#include "trainer/tables/tables_internal.h"

/* The chunks of group s that rank p owns, in increasing order, and their count. */
static int chunks_of(const group_state *s, int p, int *list) {
    int n = 0;
    for (int k = 0; k < s->g.K; k++)
        if (s->owner[k / LAYER_HASH_SHARD] == p) list[n++] = k;
    return n;
}

/* The owner exchanges' rounds. A shard's owner serves every rank's tokens, so with few shards
 * per group it would receive (backward: output gradients) or send (forward: partials) P - 1
 * ranks' worth at once, P times what a rank holds of its own. The ranks that look up a remote
 * shard of the group are taken in ranges of step = ceil(S / the most shards of the group a
 * rank owns), one range per exchange: an owner then holds about the group's S shards' worth of
 * one rank's tokens (step x the shards it owns, under S + its own), whatever P; on 2 ranks
 * one range holds all. round[p] is rank p's round, -1 for a rank that owns every shard; every
 * rank derives the same rounds from the ownership. Returns the number of rounds. */
static int owner_rounds(const group_state *s, int P, int *round) {
    int most = 1;
    for (int p = 0; p < P; p++) {
        int own = 0;
        for (int sh = 0; sh < s->S; sh++) own += s->owner[sh] == p;
        if (own > most) most = own;
    }
    int step = (s->S + most - 1) / most, n = 0;
    for (int p = 0; p < P; p++) {
        int remote = 0;
        for (int sh = 0; sh < s->S; sh++) remote |= s->owner[sh] != p;
        round[p] = remote ? n++ / step : -1;
    }
    return n ? (n + step - 1) / step : 1; /* one exchange all the same: the replies follow */
}

/* Per token, the (bucket, score) pairs of the chunks in list, as words; then, when dout is
 * given, its nout (N, OC) output gradients one after another, so that an owner computes
 * with them where they arrive. */
static uint32_t *pack_lookups(uint32_t *w, const int32_t *rowid, const float *sc, int N, int K,
                              const int *list, int nk, const float *const *dout, int nout,
                              int OC) {
    for (int n = 0; n < N; n++) {
        for (int q = 0; q < nk; q++) {
            size_t e = (size_t)n * K + list[q];
            memcpy(w++, &rowid[e], 4);
            memcpy(w++, &sc[e], 4);
        }
    }
    if (dout)
        for (int j = 0; j < nout; j++, w += (size_t)N * OC)
            memcpy(w, dout[j], (size_t)N * OC * sizeof(float));
    return w;
}

/* A source's lookups into (N, nk) keys and scores; returns where its output gradients, if
 * any, begin (pack_lookups' layout). */
static const uint32_t *unpack_lookups(const uint32_t *w, int N, int nk, int32_t *rowid,
                                      float *sc) {
    for (int n = 0; n < N; n++) {
        for (int q = 0; q < nk; q++) {
            memcpy(&rowid[(size_t)n * nk + q], w++, 4);
            memcpy(&sc[(size_t)n * nk + q], w++, 4);
        }
    }
    return w;
}

/* The (N, kn) columns [k0, k0+kn) of rowid/sc (N,K). */
static void columns(int32_t *rid, float *s2, const int32_t *rowid, const float *sc, int N, int K,
                    int k0, int kn) {
    for (int n = 0; n < N; n++) {
        memcpy(rid + (size_t)n * kn, rowid + (size_t)n * K + k0, (size_t)kn * sizeof(int32_t));
        memcpy(s2 + (size_t)n * kn, sc + (size_t)n * K + k0, (size_t)kn * sizeof(float));
    }
}

/* The row gradients of keys rid (n) just added into drows are one contribution: bitwise,
 * folded into the double sums at once; fast, they stay in drows, which sums in float. */
static void mark_contribution(const trainer_tables *t, group_state *s, const int32_t *rid,
                              size_t n) {
    if (t->fast) {
        for (size_t e = 0; e < n; e++) s->state[rid[e]] |= ST_TOUCHED;
        return;
    }
    for (size_t e = 0; e < n; e++) s->state[rid[e]] |= ST_BLOCK;
    tables_fold_marked(s, 0, s->R);
}

/* Forward, owner side. Every rank sends each owner its tokens' (bucket, score) pairs of the
 * owner's chunks. An owner computes, shard by shard, one call over the tokens of a whole
 * round of sources and of its own tokens (so it streams its rows once per round, not once per
 * source), writing each token's partials where its reply holds them: a reply is token-major,
 * (tokens, the owner's shards, nout, OC), and the round's replies lie one after another with
 * this rank's own partials right behind them, so the tokens of the call are one stride
 * apart. The requester then forms y = b + the shards' partials in shard order, as the fused
 * kernel adds them, whichever rank computed each. */
void tables_owner_forward(trainer_tables *t, int g, const int32_t *rowid, const float *sc, int N,
                          float *const *out, const float *const *b) {
    group_state *s = &t->gs[g];
    trainer_arena *x = t->scratch;
    int K = s->g.K, nout = s->g.nout, OC = s->g.OC, P = t->P, me = t->me;
    int *list = layer_xmalloc((size_t)K * sizeof(int));
    int64_t *cnt = layer_xcalloc((size_t)P, sizeof(int64_t));
    /* requests: each owner's chunks' buckets and scores of every token */
    size_t words = 0;
    for (int p = 0; p < P; p++)
        if (p != me) words += (size_t)N * 2 * chunks_of(s, p, list);
    uint32_t *send = comm_words_buffer(t->words, words); /* in place where it can be */
    if (!send) send = (uint32_t *)trainer_arena_ints(x, words + 1);
    uint32_t *w = send;
    for (int p = 0; p < P; p++) {
        int nk = p == me ? 0 : chunks_of(s, p, list);
        cnt[p] = (int64_t)N * 2 * nk;
        w = pack_lookups(w, rowid, sc, N, K, list, nk, NULL, nout, OC);
    }
    comm_words_start(t->words, send, cnt);
    int *nown = layer_xcalloc((size_t)P, sizeof(int)); /* shards of the group each rank owns */
    for (int sh = 0; sh < s->S; sh++) nown[s->owner[sh]]++;
    const int *rc;
    comm_words_wait(t->words, &rc);
    /* as an owner: every source's lookups, unpacked before the replies reuse the receive
       buffer */
    int mine = chunks_of(s, me, list);
    int *Ns = layer_xcalloc((size_t)P, sizeof(int));
    int32_t **prid = layer_xcalloc((size_t)P, sizeof(int32_t *));
    float **psc = layer_xcalloc((size_t)P, sizeof(float *));
    for (int p = 0; p < P; p++) {
        if (!mine || !rc[p]) continue;
        Ns[p] = rc[p] / (2 * mine);
        prid[p] = trainer_arena_ints(x, (size_t)Ns[p] * mine);
        psc[p] = trainer_arena_floats(x, (size_t)Ns[p] * mine);
        unpack_lookups(comm_words_from(t->words, p), Ns[p], mine, prid[p], psc[p]);
    }
    /* one range of destinations per exchange (owner_rounds); this rank's own tokens join the
       first round's call */
    int *round = layer_xmalloc((size_t)P * sizeof(int));
    int rounds = owner_rounds(s, P, round);
    size_t ld = mine ? (size_t)nown[me] * nout * OC : 0; /* floats per token */
    size_t round_words = 0; /* the largest round's replies */
    int most = 0;           /* the most tokens in one call */
    for (int r = 0; r < rounds; r++) {
        int src = 0;
        for (int p = 0; p < P; p++)
            if (round[p] == r) src += Ns[p];
        if ((size_t)src * ld > round_words) round_words = (size_t)src * ld;
        if (src + (r == 0 && mine ? N : 0) > most) most = src + (r == 0 && mine ? N : 0);
    }
    /* the replies are computed where the requesters read them, where they can be */
    float *area = (float *)comm_words_buffer(t->words, round_words + (size_t)N * ld);
    int inplace = area != NULL;
    if (!area) area = trainer_arena_floats(x, round_words + (size_t)N * ld + 1);
    float *mypart = area + round_words; /* this rank's own partials, kept through the rounds */
    int32_t *srid = trainer_arena_ints(x, (size_t)most * LAYER_HASH_SHARD + 1);
    float *ssc = trainer_arena_floats(x, (size_t)most * LAYER_HASH_SHARD + 1);
    const float **got = layer_xcalloc((size_t)P, sizeof(float *)); /* each owner's partials */
    for (int r = 0; r < rounds; r++) {
        size_t rw = 0;
        int ntok = 0;
        for (int p = 0; p < P; p++) {
            cnt[p] = round[p] == r ? (int64_t)((size_t)Ns[p] * ld) : 0;
            rw += (size_t)cnt[p];
            if (round[p] == r) ntok += Ns[p];
        }
        int withme = mine && r == 0;
        float *base = mypart - rw; /* the round's replies end where this rank's partials begin */
        /* a later round's replies overwrite the last round's, once every rank has read them */
        if (r > 0 && inplace) {
            float *again = (float *)comm_words_buffer(t->words, round_words + (size_t)N * ld);
            LAYER_ASSERT(again == area);
        }
        if (withme) ntok += N;
        for (int q = 0, i = 0; ntok && q < mine; i++) { /* shard by shard: consecutive chunks */
            int sh = list[q] / LAYER_HASH_SHARD, kn = 0;
            while (q + kn < mine && list[q + kn] / LAYER_HASH_SHARD == sh) kn++;
            size_t t0 = 0; /* the round's sources in rank order, then this rank */
            for (int p = 0; p < P; p++) {
                if (round[p] != r || !Ns[p]) continue;
                columns(srid + t0 * kn, ssc + t0 * kn, prid[p], psc[p], Ns[p], mine, q, kn);
                t0 += (size_t)Ns[p];
            }
            if (withme) columns(srid + t0 * kn, ssc + t0 * kn, rowid, sc, N, K, sh * LAYER_HASH_SHARD, kn);
            for (int j = 0; j < nout; j++)
                layer_hash_forward_ld(base + ((size_t)i * nout + j) * OC, (int)ld, srid, ssc,
                                      s->rows[j], NULL, ntok, kn, s->R, OC);
            q += kn;
        }
        comm_words_start(t->words, (const uint32_t *)base, cnt);
        comm_words_wait(t->words, &rc);
        /* this rank's partials arrive in its round; received words last only until the
           handle's next start, so before a later round they are copied out */
        for (int p = 0; round[me] == r && p < P; p++) {
            got[p] = (const float *)comm_words_from(t->words, p);
            if (r + 1 < rounds && rc[p]) {
                float *keep = trainer_arena_floats(x, (size_t)rc[p]);
                memcpy(keep, got[p], (size_t)rc[p] * sizeof(float));
                got[p] = keep;
            }
        }
    }
    free(Ns);
    free(prid);
    free(psc);
    free(round);
    /* y = b + the shards' partials in shard order, token by token: shard sh's partial of
       output j for token n is at part[sh] + n * pld[sh] + j * OC */
    const float **part = layer_xmalloc((size_t)s->S * sizeof(float *));
    size_t *pld = layer_xmalloc((size_t)s->S * sizeof(size_t));
    int *seen = layer_xcalloc((size_t)P, sizeof(int)); /* shards of each owner before sh */
    for (int sh = 0; sh < s->S; sh++) {
        int p = s->owner[sh];
        pld[sh] = (size_t)nown[p] * nout * OC;
        part[sh] = (p == me ? mypart : got[p]) + (size_t)seen[p]++ * nout * OC;
    }
    for (int n = 0; n < N; n++)
        for (int j = 0; j < nout; j++) {
            float *y = out[j] + (size_t)n * OC;
            const float *bj = b ? b[j] : NULL;
            for (int sh = 0; sh < s->S; sh++) {
                const float *pj = part[sh] + (size_t)n * pld[sh] + (size_t)j * OC;
                if (sh > 0)
                    for (int c = 0; c < OC; c++) y[c] += pj[c];
                else if (bj)
                    for (int c = 0; c < OC; c++) y[c] = bj[c] + pj[c];
                else
                    memcpy(y, pj, (size_t)OC * sizeof(float));
            }
        }
    free(part);
    free(pld);
    free(seen);
    free(nown);
    free(got);
    free(list);
    free(cnt);
    trainer_arena_reset(x);
}

/* This rank's (N, nk) buckets and scores of the chunks in list, from its activations. */
static void own_columns(int32_t *rid, float *s2, const trainer_tables_act *a, int K,
                        const int *list, int nk) {
    for (int n = 0; n < a->N; n++)
        for (int q = 0; q < nk; q++) {
            rid[(size_t)n * nk + q] = a->rowid[(size_t)n * K + list[q]];
            s2[(size_t)n * nk + q] = a->s[(size_t)n * K + list[q]];
        }
}

void tables_owner_backward(trainer_tables *t, int g, const trainer_tables_act *a,
                           const float *const *dout, float *gs, float *const *db) {
    group_state *s = &t->gs[g];
    trainer_arena *x = t->scratch;
    int K = s->g.K, nout = s->g.nout, OC = s->g.OC, P = t->P, me = t->me, N = a->N;
    int W = nout * OC;
    int *list = layer_xmalloc((size_t)K * sizeof(int));
    int64_t *cnt = layer_xcalloc((size_t)P, sizeof(int64_t));
    /* requests: buckets, scores and the output gradient of every token, to each owner */
    size_t words = 0;
    for (int p = 0; p < P; p++) {
        int nk = p == me ? 0 : chunks_of(s, p, list);
        if (nk) words += (size_t)N * (2 * nk + W);
    }
    uint32_t *send = comm_words_buffer(t->words, words); /* in place where it can be */
    if (!send) send = (uint32_t *)trainer_arena_ints(x, words + 1);
    uint32_t *w = send;
    int64_t *full = layer_xcalloc((size_t)P, sizeof(int64_t));
    for (int p = 0; p < P; p++) {
        int nk = p == me ? 0 : chunks_of(s, p, list);
        full[p] = nk ? (int64_t)N * (2 * nk + W) : 0;
        if (nk) w = pack_lookups(w, a->rowid, a->s, N, K, list, nk, dout, nout, OC);
    }
    /* one range of sources per exchange (owner_rounds): this rank sends all of it in its
       round, nothing in the others */
    int *round = layer_xmalloc((size_t)P * sizeof(int));
    int rounds = owner_rounds(s, P, round), my_round = round[me];
    free(round);
    for (int p = 0; p < P; p++) cnt[p] = my_round == 0 ? full[p] : 0;
    comm_words_start(t->words, send, cnt);
    /* This rank's chunks. Bitwise, its own block is a contribution of its own, computed (and
       folded) at once while the requests travel. Fast, its tokens go first in the first
       round's call (the bias gradient, its own tokens' alone, is summed here). */
    int mine = chunks_of(s, me, list), merge = t->fast && mine;
    float *gsl = mine ? trainer_arena_zeros(x, (size_t)N * mine + 1) : NULL;
    if (mine && !merge) {
        int32_t *rid = trainer_arena_ints(x, (size_t)N * mine + 1);
        float *s2 = trainer_arena_floats(x, (size_t)N * mine + 1);
        own_columns(rid, s2, a, K, list, mine);
        tables_local_backward(s, rid, s2, N, mine, dout, gsl, db, NULL);
        mark_contribution(t, s, rid, (size_t)N * mine);
    } else { /* the bias gradient alone: layer_hash_backward sums it first */
        tables_bias_backward(s, a->rowid, a->s, N, K, dout, db);
    }
    /* as an owner, per round: the lookups of the round's sources (and under fast this
       rank's, first) one after another, their output gradients used where they arrived.
       Fast, one call over them all, which adds each source's row sums on their own, in the
       order of the calls per source (its own, then the sources in rank order) and of fetch;
       bitwise, a call and a contribution per source, in source order. The score gradients
       are gathered for one reply. */
    const int *rc;
    int64_t *rcnt = layer_xcalloc((size_t)P, sizeof(int64_t));
    size_t rcap = 0, rlen = 0;
    uint32_t *reply = NULL;
    for (int r = 0; r < rounds; r++) {
        comm_words_wait(t->words, &rc);
        int withme = merge && r == 0, ntok = withme ? N : 0, nparts = withme;
        for (int p = 0; mine && p < P; p++)
            if (rc[p]) ntok += rc[p] / (2 * mine + W), nparts++;
        if (nparts) {
            int32_t *mrid = trainer_arena_ints(x, (size_t)ntok * mine + 1);
            float *msc = trainer_arena_floats(x, (size_t)ntok * mine + 1);
            float *mgs = trainer_arena_zeros(x, (size_t)ntok * mine + 1);
            const float **dy = layer_xmalloc((size_t)nout * nparts * sizeof(float *));
            int *ndy = layer_xmalloc((size_t)nparts * sizeof(int)), i = 0;
            size_t off = 0; /* tokens placed */
            if (withme) {
                own_columns(mrid, msc, a, K, list, mine);
                for (int j = 0; j < nout; j++) dy[(size_t)j * nparts] = dout[j];
                ndy[i++] = N;
                off = (size_t)N;
            }
            for (int p = 0; p < P; p++) {
                if (!rc[p]) continue;
                int Ns = rc[p] / (2 * mine + W);
                const uint32_t *g0 = unpack_lookups(comm_words_from(t->words, p), Ns, mine,
                                                    mrid + off * mine, msc + off * mine);
                for (int j = 0; j < nout; j++)
                    dy[(size_t)j * nparts + i] = (const float *)g0 + (size_t)j * Ns * OC;
                ndy[i++] = Ns;
                off += (size_t)Ns;
            }
            const float *const *rows = (const float *const *)s->rows;
            if (merge) {
                layer_hash_backward_parts(nout, s->drows, mgs, tables_kept_sq(t, s), dy, ndy,
                                          nparts, mrid, msc, rows, ntok, mine, s->R, OC);
                mark_contribution(t, s, mrid, (size_t)ntok * mine);
            } else {
                for (int q = 0, t0 = 0; q < nparts; t0 += ndy[q++]) {
                    const float *dq[3];
                    for (int j = 0; j < nout; j++) dq[j] = dy[(size_t)j * nparts + q];
                    size_t e = (size_t)t0 * mine;
                    layer_hash_backward_parts(nout, s->drows, mgs + e, NULL, dq, &ndy[q], 1,
                                              mrid + e, msc + e, rows, ndy[q], mine, s->R, OC);
                    mark_contribution(t, s, mrid + e, (size_t)ndy[q] * mine);
                }
            }
            free(dy);
            free(ndy);
            if (withme) memcpy(gsl, mgs, (size_t)N * mine * sizeof(float));
            off = withme ? (size_t)N : 0;
            for (int p = 0; p < P; p++) { /* the sources' score gradients, for the reply */
                if (!rc[p]) continue;
                size_t Ns = (size_t)(rc[p] / (2 * mine + W));
                if (rlen + Ns * mine > rcap) {
                    rcap = 2 * (rlen + Ns * mine);
                    reply = layer_xrealloc(reply, rcap * sizeof(uint32_t));
                }
                memcpy(reply + rlen, mgs + off * mine, Ns * mine * sizeof(float));
                rlen += Ns * mine;
                rcnt[p] = (int64_t)(Ns * mine);
                off += Ns;
            }
        }
        if (r + 1 < rounds) {
            for (int p = 0; p < P; p++) cnt[p] = my_round == r + 1 ? full[p] : 0;
            comm_words_start(t->words, send, cnt);
        }
    }
    free(full);
    for (int p = 0; p < P; p++) cnt[p] = rcnt[p];
    free(rcnt);
    comm_words_start(t->words, reply ? reply : (uint32_t *)send, cnt);
    comm_words_wait(t->words, &rc);
    if (gs) { /* the owners' score gradients into their chunks' columns */
        for (int p = 0; p < P; p++) {
            int nk = chunks_of(s, p, list);
            if (!nk) continue;
            const float *src = p == me ? gsl : (const float *)comm_words_from(t->words, p);
            for (int n = 0; n < N; n++)
                for (int q = 0; q < nk; q++)
                    gs[(size_t)n * K + list[q]] += src[(size_t)n * nk + q];
        }
    }
    free(reply);
    free(list);
    free(cnt);
    trainer_arena_reset(x);
}

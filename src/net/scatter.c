/* Acceptor thread only. */
#include "net/scatter.h"

#include <stdlib.h>

#include "core/batch.h"
#include "core/clock.h"
#include "core/request.h"
#include "core/thread_role.h"
#include "net/acceptor.h"
#include "net/conn.h"
#include "presence.pb-c.h"
#include "shards/shard.h"

/* Every part is back (or was never sent): pack the one answer, free the parts, answer. */
static void gathered(struct acceptor *acc, struct pr_request *call, bool answer)
{
    if (call->method == PR_METHOD_BATCH_DELIVER)
        call->timestamp = clock_now_ms();
    if (batch_pack(call) < 0)
        request_set_result(call, MPIM__CODE__INTERNAL, "out of memory packing the answer");
    /* The answer is in call->packed now; the parts' entries are no longer needed. */
    while (call->batch->back != NULL) {
        struct pr_request *part = call->batch->back;
        call->batch->back = part->next;
        part->next = NULL;
        acceptor_request_free(acc, part);
    }
    counter_add(&acc->counters.answered_here[call->method][call->code], 1);
    struct conn *c = answer ? acceptor_find_conn(acc, call->conn_id) : NULL;
    if (c != NULL)
        conn_answer(c, call);
    else
        acceptor_request_free(acc, call); /* its client has gone */
}

/* A request carrying shard `which`'s ids of the call, or NULL out of memory. */
static struct pr_request *part_new(struct acceptor *acc, struct pr_request *call, const int64_t *ids, size_t n,
                                   const uint32_t *shard_of, uint32_t which, uint32_t count)
{
    struct pr_request *part = acceptor_request_new(acc);
    if (part == NULL)
        return NULL;
    part->batch = batch_take(ids, n, shard_of, which, count);
    if (part->batch == NULL) {
        acceptor_request_free(acc, part);
        return NULL;
    }
    part->batch->call = call;
    part->conn_id = call->conn_id;
    part->seq = call->seq;
    part->method = call->method;
    part->message = call->message; /* into the call's args: alive until the last part is back */
    part->started_ns = call->started_ns;
    return part;
}

void scatter_call(struct acceptor *acc, struct conn *c, struct pr_request *call)
{
    ASSERT_THREAD_OF(ROLE_ACCEPTOR, acc);
    const int64_t *ids;
    size_t n;
    batch_ids(call, &ids, &n);
    const char *why = batch_check_size(n, acc->conf->max_batch);
    if (why != NULL) {
        request_set_result(call, MPIM__CODE__INVALID, "%s (%d)", why, acc->conf->max_batch);
        acceptor_answer_here(acc, c, call, call->method);
        return;
    }
    uint32_t nshards = (uint32_t)acc->nshards;
    uint32_t *count = calloc(nshards + 1, sizeof(*count));
    uint32_t *shard_of = malloc((n > 0 ? n : 1) * sizeof(*shard_of));
    if (count == NULL || shard_of == NULL)
        goto out_of_memory;
    batch_split(ids, n, nshards, shard_of, count);
    /* The ids <= 0 are answered INVALID right here: batch_take leaves them so. */
    call->batch = batch_take(ids, n, shard_of, nshards, count[nshards]);
    if (call->batch == NULL)
        goto out_of_memory;
    request_set_result(call, MPIM__CODE__OK, NULL);
    uint32_t overloaded = 0;
    for (uint32_t s = 0; s < nshards; s++) {
        if (count[s] == 0)
            continue;
        struct pr_request *part = part_new(acc, call, ids, n, shard_of, s, count[s]);
        if (part == NULL)
            continue; /* its ids get INTERNAL in the answer (batch_pack) */
        /* A part is one request of the shard's queue_depth, like any other: that bound is what
         * keeps the shard's outbox from filling. */
        if (counter_get(&acc->inflight[s]) >= (uint64_t)acc->conf->queue_depth ||
            !shard_submit(&acc->shards[s], part)) {
            batch_set_codes(part->batch, MPIM__CODE__OVERLOADED);
            overloaded += part->batch->n;
            part->next = call->batch->back;
            call->batch->back = part;
            continue;
        }
        counter_add(&acc->inflight[s], 1);
        acc->wake[s] = true;
        call->batch->parts_out++;
    }
    if (overloaded > 0)
        request_set_result(call, MPIM__CODE__OK, "%u ids answered OVERLOADED: shard queue full, retry them later",
                           overloaded);
    free(shard_of);
    free(count);
    if (call->batch->parts_out == 0)
        gathered(acc, call, true);
    return;

out_of_memory:
    free(shard_of);
    free(count);
    request_set_result(call, MPIM__CODE__INTERNAL, "out of memory splitting the batch");
    acceptor_answer_here(acc, c, call, call->method);
}

void scatter_part_back(struct acceptor *acc, struct pr_request *part, bool answer)
{
    ASSERT_THREAD_OF(ROLE_ACCEPTOR, acc);
    struct pr_request *call = part->batch->call;
    /* The first failure a shard met in this part, for the call's msg (entries carry only codes). */
    if (call->msg[0] == '\0' && part->msg[0] != '\0')
        request_set_result(call, call->code, "%s", part->msg);
    part->next = call->batch->back;
    call->batch->back = part;
    if (--call->batch->parts_out == 0)
        gathered(acc, call, answer);
}

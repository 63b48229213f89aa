/* Shard thread only (batch_run_destroy: main thread, after the shard stopped). */
#include "shards/batch_run.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/batch.h"
#include "core/request.h"
#include "core/thread_role.h"
#include "presence.pb-c.h"
#include "shards/handlers.h"
#include "shards/shard.h"

/* Recycled id requests kept beyond this are freed. */
#define SPARE_MAX (4 * BATCH_STEP)

static struct pr_request *one_new(struct shard *s)
{
    struct pr_request *one = s->batch_spare;
    if (one == NULL)
        return calloc(1, sizeof(*one));
    s->batch_spare = one->next;
    s->nbatch_spare--;
    one->next = NULL;
    return one;
}

static void one_free(struct shard *s, struct pr_request *one)
{
    request_reset(one);
    if (s->nbatch_spare >= SPARE_MAX) {
        free(one);
        return;
    }
    one->next = s->batch_spare;
    s->batch_spare = one;
    s->nbatch_spare++;
}

/* Note the first failure of the part (entries carry only codes): it becomes the call's msg. */
static void note_failure(struct pr_request *part, int64_t uid, int code, const char *msg)
{
    if (part->msg[0] == '\0' && code != MPIM__CODE__OK && code != MPIM__CODE__NOT_FOUND)
        snprintf(part->msg, sizeof(part->msg), "user %lld: %.100s", (long long)uid, msg[0] ? msg : "failed");
}

/* Start entry j as its single call; it may finish before this returns (link down). */
static void start_one(struct shard *s, struct pr_request *part, uint32_t j)
{
    struct batch_entry *e = &part->batch->entries[j];
    struct pr_request *one = one_new(s);
    if (one == NULL) {
        e->code = MPIM__CODE__INTERNAL;
        note_failure(part, e->user_id, e->code, "out of memory");
        part->batch->running--;
        part->batch->done++;
        return;
    }
    one->method = part->method == PR_METHOD_BATCH_QUERY ? PR_METHOD_QUERY : PR_METHOD_DELIVER;
    one->user_id = e->user_id;
    one->message = part->message;
    one->conn_id = part->conn_id;
    one->started_ns = part->started_ns;
    one->part = part;
    one->entry = j;
    handlers_dispatch(s, one);
}

/* Keep up to BATCH_STEP ids in progress; answer the part once all are done. Ids that finish
 * while this loop runs only count themselves (stepping), so the stack never grows per id. */
static void step(struct shard *s, struct pr_request *part)
{
    struct pr_batch *b = part->batch;
    b->stepping = true;
    while (b->next < b->n && b->running < BATCH_STEP) {
        b->running++;
        start_one(s, part, b->next++);
    }
    b->stepping = false;
    if (b->done == b->n) {
        part->code = MPIM__CODE__OK; /* the part was served; its ids' answers are its entries */
        shard_answer(s, part);       /* the acceptor's from here on */
    }
}

void batch_run_start(struct shard *s, struct pr_request *part)
{
    ASSERT_THREAD_OF(ROLE_SHARD, s);
    step(s, part);
}

void batch_run_done(struct shard *s, struct pr_request *one)
{
    struct pr_request *part = one->part;
    struct pr_batch *b = part->batch;
    struct batch_entry *e = &b->entries[one->entry];
    batch_entry_take(e, one);
    note_failure(part, e->user_id, one->code, one->msg);
    one_free(s, one);
    b->running--;
    b->done++;
    if (!b->stepping)
        step(s, part);
}

void batch_run_destroy(struct shard *s)
{
    while (s->batch_spare != NULL) {
        struct pr_request *one = s->batch_spare;
        s->batch_spare = one->next;
        free(one);
    }
    s->nbatch_spare = 0;
}

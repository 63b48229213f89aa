/* One registrar node's state machine (enum reg_node_state). Registrar thread only: the only
 * code that sends ZooKeeper requests, and it never waits for their answers: each answer comes
 * back through zk_events.c and is taken here on a later step. */
#ifndef PR_REGISTRAR_NODE_H
#define PR_REGISTRAR_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include "registrar/registrar.h"

/* Name node i of r (0: the service node, 1 + m: method m) and make it idle. */
void node_init(struct registrar *r, int i);
/* Forget everything of a closed session: idle, no answer, no watch. */
void node_reset(struct reg_node *n);
/* One step while the session is connected: take the answer that came back, then send what the
 * node needs next. Creation waits for `serving` and, for a method node, the service node. */
void node_step(struct registrar *r, struct reg_node *n, int64_t now_ms, bool serving);

#endif

/*-------------------------------------------------------------------------
 *
 * target.h
 *	  The targets --target chooses (target.c's registry of TargetKinds), and
 *	  the operations the stream loop calls on them (target_ops.h).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TARGET_H
#define TARGET_H

#include "target_ops.h"

/*
 * The targets --target names, set up from the options (region,
 * endpoints, credentials); a setting that cannot work is exit 2.
 * Exits 0 after --check-credentials.
 */
extern Target *target_create(StopFlag *abort, WaitTickFn tick, void *tick_arg,
							 AwsCredentialProvider **provider);

/*
 * Checks --target against the registry and each kind's options (after
 * check_options); the names chosen, in the registry's order.
 */
extern void target_check_options(void);
extern const char *target_chosen_names(void);

/* Several targets as one (--target kinesis,s3). */
extern Target *target_multi_create(Target **parts, int nparts);

/* The operations, with NULL meaning "nothing to do". */
extern const char *target_name(Target *t);
extern ShipResult target_check(Target *t, StopFlag *stop);
extern ShipResult target_claim(Target *t, const char *system_id, const char *dbname,
							   const char *slot, StopFlag *stop);
extern bool target_keeps_loads(Target *t);
extern ShipResult target_forget_load(Target *t, uint64_t lsn, StopFlag *stop);
extern ShipResult target_sweep_loads(Target *t, StopFlag *stop);
extern bool target_add(Target *t, const TargetRow *row);
extern bool target_poll(Target *t, double now);
extern double target_next_due(Target *t);
extern int	target_wake_fd(Target *t);
extern bool target_flush(Target *t);
extern bool target_held_lsn(Target *t, uint64_t *lsn);
extern int	target_held_rows(Target *t);
extern void target_stats(Target *t, MetricsState *m);
extern void target_summary(Target *t);
extern void target_destroy(Target *t);


#endif							/* TARGET_H */

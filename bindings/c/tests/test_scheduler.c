/* Drives safestep's C ABI and checks its decisions, errors and checkpoints. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "safestep.h"

static int passed = 0, failed = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond) {                                                                  \
            passed++;                                                                \
        } else {                                                                     \
            failed++;                                                                \
            fprintf(stderr, "FAIL %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, \
                    #cond, safestep_last_error());                                   \
        }                                                                            \
    } while (0)

static int same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static int same_report(const SafestepReport *a, const SafestepReport *b) {
    return a->decision == b->decision && same_bits(a->lr_before, b->lr_before) &&
           same_bits(a->lr_after, b->lr_after) && same_bits(a->rho, b->rho) &&
           same_bits(a->vol, b->vol) && same_bits(a->snr_g, b->snr_g) &&
           same_bits(a->snr_v, b->snr_v) && same_bits(a->snr, b->snr) &&
           same_bits(a->rho_g, b->rho_g) && same_bits(a->rho_vol, b->rho_vol) &&
           same_bits(a->rho_combined, b->rho_combined) && same_bits(a->bound, b->bound) &&
           same_bits(a->g2_ema, b->g2_ema) && same_bits(a->noise_ema, b->noise_ema);
}

/* rho far above the bound: every event cools by exactly gamma_cool. */
static void test_cooling(void) {
    SafestepConfig cfg;
    SafestepScheduler *s = NULL;
    SafestepObservation obs;
    SafestepProgress progress;
    SafestepReport r;
    double lr, want = 1e-3;
    int k;
    memset(&obs, 0, sizeof obs);
    memset(&progress, 0, sizeof progress);
    CHECK(safestep_config_default(&cfg) == SAFESTEP_STATUS_OK);
    CHECK(cfg.mode == SAFESTEP_MODE_COMBINED && cfg.interval == 10 && cfg.cool == 0.99);
    CHECK(safestep_scheduler_new(&cfg, 1e-3, &s) == SAFESTEP_STATUS_OK && s != NULL);
    /* G^2 = 0 (pure noise): every bound is 0, and rho = 0.5 * 10 = 5. */
    CHECK(safestep_noise_from_variance(1.0, 64.0, 32, 0, &obs.noise) == SAFESTEP_STATUS_OK);
    obs.alpha_agg = 0.5;
    obs.sharpness = 10.0;
    for (k = 0; k < 10; k++) {
        CHECK(safestep_scheduler_observe(s, &obs, &progress, &r) == SAFESTEP_STATUS_OK);
        CHECK(r.decision == SAFESTEP_DECISION_COOL);
        CHECK(r.rho == 5.0 && r.bound == 0.0);
        CHECK(same_bits(r.lr_after, r.lr_before * 0.99));
        want *= 0.99;
    }
    CHECK(safestep_scheduler_lr(s, &lr) == SAFESTEP_STATUS_OK && same_bits(lr, want));
    safestep_scheduler_free(s);
}

/* rho far below the bound, early in the task: warm by exactly gamma_warm; late: hold. */
static void test_warming(void) {
    SafestepConfig cfg;
    SafestepScheduler *s = NULL;
    SafestepObservation obs;
    SafestepProgress progress = {0, 100, 0, 0};
    SafestepReport r;
    memset(&obs, 0, sizeof obs);
    safestep_config_default(&cfg);
    CHECK(safestep_scheduler_new(&cfg, 1e-3, &s) == SAFESTEP_STATUS_OK);
    CHECK(safestep_noise_from_variance(1.0, 0.0, 32, 0, &obs.noise) == SAFESTEP_STATUS_OK);
    obs.alpha_agg = 1e-6;
    obs.sharpness = 1.0;
    CHECK(safestep_scheduler_observe(s, &obs, &progress, &r) == SAFESTEP_STATUS_OK);
    CHECK(r.decision == SAFESTEP_DECISION_WARM && same_bits(r.lr_after, 1e-3 * 1.01));
    CHECK(isinf(r.snr_g) && r.bound == 1.6);
    progress.step_in_task = 90;
    CHECK(safestep_scheduler_observe(s, &obs, &progress, &r) == SAFESTEP_STATUS_OK);
    CHECK(r.decision == SAFESTEP_DECISION_HOLD);
    safestep_scheduler_free(s);
}

/* Export, import, and both continue bit-identically. */
static void test_checkpoint(void) {
    SafestepConfig cfg;
    SafestepScheduler *a = NULL, *b = NULL;
    SafestepObservation obs;
    SafestepProgress progress = {0, 200, 0, 0};
    SafestepReport ra, rb;
    double state[512];
    size_t need = 0, got = 0;
    uint64_t events = 0;
    int k, identical = 1;
    memset(&obs, 0, sizeof obs);
    safestep_config_default(&cfg);
    cfg.control = SAFESTEP_CONTROL_PROPORTIONAL;
    CHECK(safestep_scheduler_new(&cfg, 1e-3, &a) == SAFESTEP_STATUS_OK);
    for (k = 0; k < 7; k++) {
        safestep_noise_from_sample_sq_norms(0.01 * (k + 1), 3.0 + k, 64, 1000, &obs.noise);
        obs.alpha_agg = 0.01 * (k + 1);
        obs.sharpness = 20.0 - 3.0 * k;
        progress.step_in_task = (uint64_t)(10 * k);
        CHECK(safestep_scheduler_observe(a, &obs, &progress, &ra) == SAFESTEP_STATUS_OK);
    }
    /* Length query, then a too-small buffer, then the real export. */
    CHECK(safestep_scheduler_export_state(a, NULL, 0, &need) == SAFESTEP_STATUS_BUFFER_TOO_SMALL);
    CHECK(need == 13 + 7);
    CHECK(safestep_scheduler_export_state(a, state, need - 1, &got) == SAFESTEP_STATUS_BUFFER_TOO_SMALL);
    CHECK(strstr(safestep_last_error(), "needs 20") != NULL);
    CHECK(safestep_scheduler_export_state(a, state, sizeof state / sizeof state[0], &got) == SAFESTEP_STATUS_OK);
    CHECK(got == need && state[0] == 2.0);
    CHECK(safestep_scheduler_import_state(&cfg, state, got, &b) == SAFESTEP_STATUS_OK);
    for (k = 0; k < 30; k++) {
        safestep_noise_from_sample_sq_norms(0.02 + 0.001 * k, 5.0 + 0.5 * k, 64, 1000, &obs.noise);
        obs.alpha_agg = 0.003 * (k % 7 + 1);
        obs.sharpness = (k % 5 == 0) ? -0.5 : 4.0 + k;
        obs.has_lr_used = k % 2;
        obs.lr_used = 5e-4;
        progress.step_in_task = (uint64_t)(70 + 10 * k);
        CHECK(safestep_scheduler_observe(a, &obs, &progress, &ra) == SAFESTEP_STATUS_OK);
        CHECK(safestep_scheduler_observe(b, &obs, &progress, &rb) == SAFESTEP_STATUS_OK);
        identical &= same_report(&ra, &rb);
    }
    CHECK(identical);
    CHECK(safestep_scheduler_events(b, &events) == SAFESTEP_STATUS_OK && events == 37);
    /* A truncated or corrupted state is rejected. */
    CHECK(safestep_scheduler_import_state(&cfg, state, 5, &b) == SAFESTEP_STATUS_INVALID_ARGUMENT);
    state[0] = 7.0;
    CHECK(safestep_scheduler_import_state(&cfg, state, got, &b) == SAFESTEP_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(safestep_last_error(), "state format") != NULL);
    safestep_scheduler_free(a);
    safestep_scheduler_free(b);
}

/* Errors name the input, change nothing, and null pointers never crash. */
static void test_errors(void) {
    SafestepConfig cfg;
    SafestepScheduler *s = NULL;
    SafestepObservation obs;
    SafestepProgress progress;
    SafestepReport r;
    SafestepNoiseStats n;
    double lr = 0.0;
    uint64_t events = 1;
    memset(&obs, 0, sizeof obs);
    memset(&progress, 0, sizeof progress);
    safestep_config_default(&cfg);
    CHECK(safestep_config_default(NULL) == SAFESTEP_STATUS_NULL_POINTER);
    CHECK(strcmp(safestep_last_error(), "out: null pointer") == 0);
    cfg.cool = 1.5;
    CHECK(safestep_config_validate(&cfg) == SAFESTEP_STATUS_INVALID_ARGUMENT);
    CHECK(strcmp(safestep_last_error(), "config field cool = 1.5: must be in (0, 1]") == 0);
    CHECK(safestep_scheduler_new(&cfg, 1e-3, &s) == SAFESTEP_STATUS_INVALID_ARGUMENT && s == NULL);
    cfg.cool = 0.99;
    cfg.mode = 17;
    CHECK(safestep_config_validate(&cfg) == SAFESTEP_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(safestep_last_error(), "mode = 17") != NULL);
    cfg.mode = SAFESTEP_MODE_GRADIENT;
    cfg.window = 300;
    CHECK(safestep_config_validate(&cfg) == SAFESTEP_STATUS_INVALID_ARGUMENT);
    cfg.window = 20;
    CHECK(safestep_scheduler_new(&cfg, 1.0, &s) == SAFESTEP_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(safestep_last_error(), "lr0") != NULL);
    CHECK(safestep_scheduler_new(NULL, 1e-3, &s) == SAFESTEP_STATUS_NULL_POINTER);
    CHECK(safestep_scheduler_new(&cfg, 1e-3, NULL) == SAFESTEP_STATUS_NULL_POINTER);
    CHECK(safestep_scheduler_new(&cfg, 1e-3, &s) == SAFESTEP_STATUS_OK);
    CHECK(safestep_noise_from_variance(1.0, 1.0, 8, 0, &obs.noise) == SAFESTEP_STATUS_OK);
    obs.alpha_agg = -0.1;
    obs.sharpness = 1.0;
    CHECK(safestep_scheduler_observe(s, &obs, &progress, &r) == SAFESTEP_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(safestep_last_error(), "alpha_agg = -0.1") != NULL);
    obs.alpha_agg = 0.1;
    obs.sharpness = NAN;
    CHECK(safestep_scheduler_observe(s, &obs, &progress, &r) == SAFESTEP_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(safestep_last_error(), "sharpness is not finite") != NULL);
    CHECK(safestep_scheduler_observe(s, NULL, &progress, &r) == SAFESTEP_STATUS_NULL_POINTER);
    CHECK(safestep_scheduler_observe(NULL, &obs, &progress, &r) == SAFESTEP_STATUS_NULL_POINTER);
    CHECK(safestep_scheduler_events(s, &events) == SAFESTEP_STATUS_OK && events == 0);
    CHECK(safestep_scheduler_lr(s, &lr) == SAFESTEP_STATUS_OK && lr == 1e-3);
    CHECK(safestep_scheduler_lr(NULL, &lr) == SAFESTEP_STATUS_NULL_POINTER);
    CHECK(safestep_scheduler_lr(s, NULL) == SAFESTEP_STATUS_NULL_POINTER);
    CHECK(safestep_scheduler_begin_task(NULL) == SAFESTEP_STATUS_NULL_POINTER);
    CHECK(safestep_noise_from_variance(1.0, -1.0, 8, 0, &n) == SAFESTEP_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(safestep_last_error(), "variance = -1") != NULL);
    CHECK(safestep_noise_from_variance(1.0, 1.0, 1, 0, &n) == SAFESTEP_STATUS_INVALID_ARGUMENT);
    CHECK(safestep_noise_from_sample_grads(NULL, 2, NULL, 3, 0, &n) == SAFESTEP_STATUS_NULL_POINTER);
    CHECK(strcmp(safestep_status_name(SAFESTEP_STATUS_BUFFER_TOO_SMALL), "buffer too small") == 0);
    safestep_scheduler_free(s);
    safestep_scheduler_free(NULL);
}

static void test_noise_and_bounds(void) {
    /* B = 3 samples of P = 2 parameters, row-major. */
    const double samples[6] = {1.0, 2.0, 3.0, -1.0, 0.5, 0.5};
    const double mean[2] = {1.5, 0.5};
    double sum_sq = 0.0, snr = -1.0;
    SafestepNoiseStats a, b;
    SafestepBounds bd;
    int i;
    for (i = 0; i < 6; i++) sum_sq += samples[i] * samples[i];
    CHECK(safestep_noise_from_sample_grads(mean, 2, samples, 3, 10, &a) == SAFESTEP_STATUS_OK);
    CHECK(safestep_noise_from_sample_sq_norms(2.5, sum_sq, 3, 10, &b) == SAFESTEP_STATUS_OK);
    CHECK(a.batch == 3 && fabs(a.variance - b.variance) < 1e-12);
    CHECK(fabs(a.noise - a.variance / 3.0 * 0.7) < 1e-12);
    CHECK(safestep_noise_snr(&a, &snr) == SAFESTEP_STATUS_OK && snr >= 0.0);
    CHECK(safestep_bounds(1.0, 32.0, 32, 0.8, 1.0, &bd) == SAFESTEP_STATUS_OK);
    CHECK(fabs(bd.snr - 0.5) < 1e-15 && fabs(bd.rho_g - 0.8) < 1e-15);
    CHECK(fabs(bd.rho_combined - 1.6 / 3.0) < 1e-15);
    CHECK(safestep_bounds(INFINITY, 0.0, 8, 0.5, 1.0, &bd) == SAFESTEP_STATUS_OK);
    CHECK(bd.rho_g == 1.0 && bd.rho_vol == 1.0 && bd.rho_combined == 1.0);
    CHECK(safestep_bounds(NAN, 0.0, 8, 0.5, 1.0, &bd) == SAFESTEP_STATUS_INVALID_ARGUMENT);
    CHECK(safestep_bounds(1.0, 0.0, 0, 0.5, 1.0, &bd) == SAFESTEP_STATUS_INVALID_ARGUMENT);
}

int main(void) {
    printf("safestep %s\n", safestep_version());
    test_cooling();
    test_warming();
    test_checkpoint();
    test_errors();
    test_noise_and_bounds();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

/*
 * A two-layer toy "model" trained by Adam, with safestep scheduling each layer's lr.
 *
 * Layer l has P parameters and the loss 0.5 * c_l * ||w||^2 (Hessian c_l * I, so its
 * sharpness is c_l); per-sample gradients are c_l * w + noise of scale n_l. Early in the
 * task rho is far below the bound, so both layers warm, then hold; as w shrinks, layer 0's
 * gradient signal falls towards its noise and its bound drops (1.59, 1.58, 1.48 at steps
 * 100, 200, 300) while layer 1's stays at 1.6. Every K steps the example
 * computes each layer's statistics (noise from the per-sample gradients, alpha_agg from
 * Adam's v) and asks safestep for the next lr.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "safestep.h"

#define LAYERS 2
#define P 16
#define B 8

static double noise_at(unsigned *state) { /* deterministic noise in [-0.5, 0.5) */
    *state = *state * 1103515245u + 12345u;
    return ((*state >> 8) & 0xffff) / 65536.0 - 0.5;
}

static int fail(const char *what, SafestepStatus st) {
    fprintf(stderr, "%s: %s: %s\n", what, safestep_status_name(st), safestep_last_error());
    return 1;
}

int main(void) {
    const double curvature[LAYERS] = {50.0, 2.0}, noise_scale[LAYERS] = {20.0, 0.2}, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    double w[LAYERS][P], m[LAYERS][P] = {{0}}, v[LAYERS][P] = {{0}}, samples[B * P], mean[P];
    SafestepScheduler *sched[LAYERS];
    SafestepConfig cfg;
    SafestepStatus st;
    unsigned rng = 1;
    int l, i, j, step;
    if ((st = safestep_config_default(&cfg)) != SAFESTEP_STATUS_OK) return fail("config", st);
    cfg.interval = 5;
    for (l = 0; l < LAYERS; l++) {
        for (j = 0; j < P; j++) w[l][j] = 1.0;
        if ((st = safestep_scheduler_new(&cfg, 5e-3, &sched[l])) != SAFESTEP_STATUS_OK) return fail("new", st);
    }
    for (step = 0; step < 400; step++) {
        for (l = 0; l < LAYERS; l++) {
            double lr, sum_v_hat = 0.0;
            SafestepObservation obs = {0};
            SafestepProgress progress = {0};
            SafestepReport r;
            safestep_scheduler_lr(sched[l], &lr);
            for (j = 0; j < P; j++) mean[j] = 0.0;
            for (i = 0; i < B; i++)
                for (j = 0; j < P; j++) {
                    samples[i * P + j] = curvature[l] * w[l][j] + noise_scale[l] * noise_at(&rng);
                    mean[j] += samples[i * P + j] / B;
                }
            for (j = 0; j < P; j++) { /* Adam */
                m[l][j] = beta1 * m[l][j] + (1 - beta1) * mean[j];
                v[l][j] = beta2 * v[l][j] + (1 - beta2) * mean[j] * mean[j];
                double m_hat = m[l][j] / (1 - pow(beta1, step + 1));
                double v_hat = v[l][j] / (1 - pow(beta2, step + 1));
                w[l][j] -= lr * m_hat / (sqrt(v_hat) + eps);
                sum_v_hat += v_hat;
            }
            if (step == 0 || step % (int)cfg.interval != 0) continue;
            st = safestep_noise_from_sample_grads(mean, P, samples, B, 0, &obs.noise);
            if (st != SAFESTEP_STATUS_OK) return fail("noise", st);
            obs.alpha_agg = lr / (sqrt(sum_v_hat / P) + eps);
            obs.sharpness = curvature[l];
            progress.step = (uint64_t)step;
            progress.total_steps = 400;
            if ((st = safestep_scheduler_observe(sched[l], &obs, &progress, &r)) != SAFESTEP_STATUS_OK)
                return fail("observe", st);
            if (step % 100 == 0)
                printf("step %3d layer %d: rho %.3g bound %.3g -> %s, lr %.3e\n", step, l, r.rho, r.bound,
                       r.decision == SAFESTEP_DECISION_COOL ? "cool" : r.decision == SAFESTEP_DECISION_WARM ? "warm" : "hold",
                       r.lr_after);
        }
    }
    for (l = 0; l < LAYERS; l++) {
        double lr;
        safestep_scheduler_lr(sched[l], &lr);
        printf("layer %d (sharpness %g): final lr %.3e, |w_0| %.3g\n", l, curvature[l], lr, fabs(w[l][0]));
        safestep_scheduler_free(sched[l]);
    }
    return 0;
}

/* Forecast a CSV series (one number per line, a header line or empty cells allowed: they are
 * missing values) with a goldcrest Toto model, from C99.
 * usage: forecast MODEL.safetensors SERIES.csv [HORIZON] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "goldcrest.h"

#define MAX_STEPS 4096

int main(int argc, char **argv) {
    static double values[MAX_STEPS];
    static unsigned char mask[MAX_STEPS];
    double levels[3] = {0.1, 0.5, 0.9}, *mean = NULL;
    float *quant = NULL;
    char line[256];
    size_t steps = 0, t, horizon = argc > 3 ? (size_t)atoi(argv[3]) : 12;
    GoldcrestForecaster *fc = NULL;
    GoldcrestForecastRequest req;
    GoldcrestForecastOutput out;
    GoldcrestMemoryPlan plan;
    GoldcrestStatus s;
    unsigned char *memory = NULL;
    FILE *f;
    int rc = 1;

    if (argc < 3 || horizon == 0) { fprintf(stderr, "usage: forecast MODEL SERIES.csv [HORIZON]\n"); return 2; }
    if (!(f = fopen(argv[2], "r"))) { perror(argv[2]); return 1; }
    while (steps < MAX_STEPS && fgets(line, sizeof line, f)) {
        char *end;
        double v = strtod(line, &end);
        if (end == line && steps == 0 && line[0] != '\n' && line[0] != ',') continue; /* header */
        values[steps] = v;
        mask[steps] = end != line; /* empty or non-numeric cell: missing */
        steps++;
    }
    fclose(f);
    if (steps == 0) { fprintf(stderr, "%s: no values\n", argv[2]); return 1; }

    if ((s = goldcrest_forecaster_open_file(argv[1], &fc)) != GOLDCREST_STATUS_OK) goto fail;
    memset(&req, 0, sizeof req);
    req.struct_size = sizeof req;
    req.values = values; req.mask = mask; req.variates = 1; req.context = steps;
    req.horizon = horizon; req.samples = 128; req.seed = 1;
    req.quantiles = levels; req.n_quantiles = 3;
    if ((s = goldcrest_forecaster_memory_plan(fc, &req, &plan)) != GOLDCREST_STATUS_OK) goto fail;
    memory = malloc(plan.total_bytes);
    mean = malloc(horizon * sizeof *mean);
    quant = malloc(horizon * 3 * sizeof *quant);
    if (!memory || !mean || !quant) goto done;
    out.mean = mean; out.quantiles = quant; out.samples = NULL;
    if ((s = goldcrest_forecast(fc, &req, memory, plan.total_bytes, &out)) != GOLDCREST_STATUS_OK) goto fail;
    printf("%zu steps of context, memory %zu B, weights %zu B in place\n", steps, plan.total_bytes, plan.weight_bytes);
    printf("step      mean       q10    median       q90\n");
    for (t = 0; t < horizon; t++)
        printf("%4zu %9.3f %9.3f %9.3f %9.3f\n", t + 1, mean[t], quant[t * 3], quant[t * 3 + 1], quant[t * 3 + 2]);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "forecast: %s (%s)\n", goldcrest_status_str((int32_t)s), goldcrest_last_error());
done:
    free(memory); free(mean); free(quant);
    goldcrest_forecaster_free(fc);
    return rc;
}

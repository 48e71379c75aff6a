/* SanitizerCoverage trace-pc-guard callbacks: each guard gets a number, each run counts the
 * hits per number, and the engine merges a run's hit-count classes into what it has seen. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define EDGES (1u << 20)

static uint8_t hits[EDGES];
static uint32_t next_guard;

void __sanitizer_cov_trace_pc_guard_init(uint32_t *start, uint32_t *stop) {
    if (start == stop || *start != 0)
        return;
    for (uint32_t *guard = start; guard < stop; guard++)
        *guard = ++next_guard % EDGES;
}

void __sanitizer_cov_trace_pc_guard(uint32_t *guard) {
    uint8_t *count = &hits[*guard];
    if (*count != 255)
        (*count)++;
}

/* Slots in use: the guards numbered so far, and slot 0. */
size_t hostnetd_fuzz_slots(void) {
    return next_guard + 1 < EDGES ? next_guard + 1 : EDGES;
}

void hostnetd_fuzz_reset(void) {
    memset(hits, 0, hostnetd_fuzz_slots());
}

/* libFuzzer's (and AFL's) hit-count classes: a loop taken once more is no news, an order of
 * magnitude more is. */
static uint8_t class_of(uint8_t count) {
    if (count < 3) return count;
    if (count == 3) return 4;
    if (count < 8) return 8;
    if (count < 16) return 16;
    if (count < 32) return 32;
    if (count < 128) return 64;
    return 128;
}

/* Merges the last run's classes into seen (one byte per slot); returns the number of new
 * classes and adds the newly reached edges to *edges. */
size_t hostnetd_fuzz_merge(uint8_t *seen, size_t *edges) {
    size_t slots = hostnetd_fuzz_slots(), new_classes = 0;
    for (size_t slot = 0; slot < slots; slot++) {
        uint8_t class = class_of(hits[slot]);
        if (class == 0 || (seen[slot] & class) != 0)
            continue;
        if (seen[slot] == 0)
            (*edges)++;
        seen[slot] |= class;
        new_classes++;
    }
    return new_classes;
}

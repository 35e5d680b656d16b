/*
 * kern.c: run-time ISA selection for the integer kernels. The CPU is
 * queried once through the compiler's cpu-feature builtins (which also check
 * that the OS saves the wide registers); CCQ_ISA forces a path.
 */
#include "ccq/kern.h"

#include <stdlib.h>
#include <string.h>

const char *const kern_isa_names[] = {"avx512vnni", "avx2", "scalar", NULL};

const kern_isa *kern_isa_by_name(const char *name)
{
    if (strcmp(name, "avx512vnni") == 0) return &kern_isa_avx512vnni;
    if (strcmp(name, "avx2") == 0) return &kern_isa_avx2;
    if (strcmp(name, "scalar") == 0) return &kern_isa_scalar;
    return NULL;
}

int kern_isa_supported(const char *name)
{
    __builtin_cpu_init();
    if (strcmp(name, "scalar") == 0) return 1;
    if (strcmp(name, "avx2") == 0) return __builtin_cpu_supports("avx2");
    if (strcmp(name, "avx512vnni") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vnni");
    return 0;
}

ccq_status kern_select(const kern_isa **isa, ccq_err *err)
{
    const char *forced = getenv("CCQ_ISA");
    if (forced && *forced) {
        if (!kern_isa_by_name(forced))
            return ccq_fail(err, CCQ_ERR_USAGE, "CCQ_ISA=%s: unknown (scalar, avx2 or avx512vnni)", forced);
        if (!kern_isa_supported(forced))
            return ccq_fail(err, CCQ_ERR_USAGE, "CCQ_ISA=%s: this CPU does not support it", forced);
        *isa = kern_isa_by_name(forced);
        return CCQ_OK;
    }
    for (int i = 0; kern_isa_names[i]; i++)
        if (kern_isa_supported(kern_isa_names[i])) {
            *isa = kern_isa_by_name(kern_isa_names[i]);
            return CCQ_OK;
        }
    *isa = &kern_isa_scalar;
    return CCQ_OK;
}

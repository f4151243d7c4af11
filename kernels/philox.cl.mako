## philox.cl.mako - Philox4x32-10 (Salmon et al., SC'11, as Random123 defines it; cuRAND, JAX and
## PyTorch use it), the counter-based generator of every template that draws random numbers
## (dropout.cl.mako, gather.cl.mako). Not a kernel: those templates import its defs with
##   <%namespace name="philox" file="philox.cl.mako"/>
## and the rounds are rendered into their source, so the kernel cache key (the rendered source)
## covers this file too. Its numpy twin is philox4x32 in hetcl/codegen/probes/dropout.py.
##
## rounds(uintv, ulongv, key0, key1): the 10 rounds, in place, on four variables r0, r1, r2, r3 of
## type uintv (uint, or uintN to run N generators at once) that the caller declares: the counter
## words on entry, the four output words on exit. ulongv is the matching 64-bit type (ulong,
## ulongN): each round's two 32 x 32 -> 64-bit products. key0 and key1 are uint expressions,
## the key (seed_lo, seed_hi); the rounds declare uint k0, k1 (the key, bumped between rounds),
## so they are used at most once per scope. Rendered at 4 spaces of indent (a kernel's body).
<%def name="rounds(uintv, ulongv, key0='seed_lo', key1='seed_hi')">\
    uint k0 = ${key0}, k1 = ${key1};
    for (int i = 0; i < 10; ++i) {
        const ${ulongv} p0 = convert_${ulongv}(r0) * 0xD2511F53UL;
        const ${ulongv} p1 = convert_${ulongv}(r2) * 0xCD9E8D57UL;
        r0 = convert_${uintv}(p1 >> 32) ^ r1 ^ k0;
        r1 = convert_${uintv}(p1);
        r2 = convert_${uintv}(p0 >> 32) ^ r3 ^ k1;
        r3 = convert_${uintv}(p0);
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
</%def>

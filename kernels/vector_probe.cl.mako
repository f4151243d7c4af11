## vector_probe.cl.mako - which vector width the device's compiler really handles.
##   b[i] = twice(convert_floatVW(a[i])) with twice(v) = v * 2 + 1, for i < global size
## A kernel of nothing but VW-wide vectors: the conversion uchar -> float that hetcl's gather
## does, and a vector passed to a function that is not inlined (the calling convention of a
## VW-wide argument is where a compiler that targets narrower vector registers than the device
## reports - e.g. LLVM targeting AVX2 on an AVX-512 CPU - warns or fails first). It must build
## without a warning that its scalar (VW=1) build does not get too, run, and match numpy
## (hetcl/codegen/vector_probe.py), or the device's "vector_width" feature is set below VW.
##
## Memory layout: a uint8 [n * VW], b float32 [n * VW], packed; work-item i owns elements
## i*VW .. i*VW + VW - 1. NDRange: global = (n,), local = none (the driver's choice).
##
## Tunables (hetcl/codegen/vector_probe.py: VectorProbeParams):
##   VW  the vector width under test: 1, 2, 4, 8 or 16
// Warnings the VW=1 build gets too are the driver's, not the width's (see vector_probe.py).
<%
FT = "float" if VW == 1 else "float%d" % VW
UT = "uchar" if VW == 1 else "uchar%d" % VW
%>
__attribute__((noinline)) ${FT} twice(${FT} v) {
    return v * 2.0f + 1.0f;
}

__kernel void vector_probe(__global const ${UT}* restrict a, __global ${FT}* restrict b) {
    const size_t i = get_global_id(0);
    b[i] = twice(convert_${FT}(a[i]));
}

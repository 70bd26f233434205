#version 450
// Compiler probe: GL_NV_cooperative_matrix2 (workgroup-scope matrices and tensor layouts).
#extension GL_KHR_cooperative_matrix : require
#extension GL_NV_cooperative_matrix2 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
layout(local_size_x = 128) in;
layout(std430, binding = 0) buffer Out { float o[]; };
void main() {
    tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV> t = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
    t = setTensorLayoutDimensionNV(t, 64, 64);
    coopmat<float16_t, gl_ScopeWorkgroup, 64, 32, gl_MatrixUseA> a = coopmat<float16_t, gl_ScopeWorkgroup, 64, 32, gl_MatrixUseA>(1.0);
    coopmat<float16_t, gl_ScopeWorkgroup, 32, 64, gl_MatrixUseB> b = coopmat<float16_t, gl_ScopeWorkgroup, 32, 64, gl_MatrixUseB>(1.0);
    coopmat<float, gl_ScopeWorkgroup, 64, 64, gl_MatrixUseAccumulator> c = coopmat<float, gl_ScopeWorkgroup, 64, 64, gl_MatrixUseAccumulator>(0.0);
    coopMatStoreTensorNV(coopMatMulAdd(a, b, c), o, 0, sliceTensorLayoutNV(t, 0, 64, 0, 64));
}

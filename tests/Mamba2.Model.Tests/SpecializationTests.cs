using System.Reflection;
using System.Text.RegularExpressions;
using Mamba2.Model.Ops;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// Every kernel's typed specialization record names its constants as the GLSL does, in constant_id order
/// (local_size_x_id is Local), and produces them in that order: a record and its shader cannot drift apart.
/// </summary>
public class SpecializationTests
{
    public static TheoryData<string, Type> Kernels()
    {
        var data = new TheoryData<string, Type>();
        var pairs = typeof(Gemm).Assembly.GetType("Mamba2.Model.Ops.Shaders")!
            .GetFields(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic)
            .Where(f => f.FieldType.IsGenericType && f.FieldType.GetGenericTypeDefinition() == typeof(KernelSource<>))
            .Select(f => (Shader: SourceFile(((KernelSource)f.GetValue(null)!).ResourceName), Spec: f.FieldType.GetGenericArguments()[0]))
            .Distinct();   // a shader's variants share its constants: one case each
        foreach (var (shader, spec) in pairs)
        {
            data.Add(shader, spec);
        }

        // Kernels whose variants a method picks (Shaders.GemmCoopmat(...), ChunkScanTc(...), RmsNormOf(...)), not a field.
        data.Add("tc/gemm_coopmat", typeof(GemmCoopmatSpec));
        data.Add("tc/chunk_cb", typeof(SsdTcSpec));
        data.Add("tc/chunk_state", typeof(ChunkStateTcSpec));
        data.Add("tc/chunk_scan", typeof(ChunkScanTcSpec));
        data.Add("tc/chunk_scan_bwd_dcb", typeof(ChunkScanBwdDcbTcSpec));
        data.Add("tc/chunk_scan_bwd_dbc", typeof(ChunkScanBwdDbcTcSpec));
        data.Add("nn/conv1d", typeof(Conv1dSpec));
        data.Add("nn/conv1d_bwd", typeof(Conv1dBwdSpec));
        data.Add("nn/rmsnorm", typeof(RmsNormSpec));
        data.Add("nn/rmsnorm_bwd", typeof(RmsNormBwdSpec));
        data.Add("nn/copy_columns", typeof(CopyColumnsSpec));
        return data;
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void RecordNamesAndOrderMatchTheShader(string shader, Type spec)
    {
        var glsl = SsdFlagsTests.ShaderSource($"{shader}.comp");
        var ids = new SortedDictionary<int, string>();
        foreach (Match m in Regex.Matches(glsl, @"layout\(\s*constant_id\s*=\s*(\d+)\s*\)\s*const\s+\w+\s+(\w+)"))
        {
            ids.Add(int.Parse(m.Groups[1].Value), m.Groups[2].Value);
        }

        foreach (Match m in Regex.Matches(glsl, @"layout\(\s*local_size_x_id\s*=\s*(\d+)\s*\)"))
        {
            ids.Add(int.Parse(m.Groups[1].Value), "LOCAL");
        }

        Assert.Equal(Enumerable.Range(0, ids.Count), ids.Keys);
        var parameters = spec.GetConstructors().Select(c => c.GetParameters()).MaxBy(p => p.Length) ?? [];
        static string Norm(string name) => name.Replace("_", "").ToUpperInvariant();
        Assert.Equal(ids.Values.Select(Norm), parameters.Select(p => Norm(p.Name!)));

        // Constants() gives each parameter at its own id.
        object Arg(Type type, int i) =>
            type == typeof(bool) ? true : type.IsEnum ? Enum.ToObject(type, (uint)(100 + i)) : (uint)(100 + i);
        var args = parameters.Select((p, i) => Arg(p.ParameterType, i)).ToArray();
        var constants = ((ISpecialization)Activator.CreateInstance(spec, args)!).Constants();
        Assert.Equal(args.Select(a => a is bool ? 1u : Convert.ToUInt32(a)), constants);
    }

    // A variant built with OUT_BF16 ("_out_bf16") or TENSORS_BF16 ("_bf16") shares its shader's constants.
    private static string SourceFile(string resourceName)
    {
        var name = resourceName["shaders/".Length..^".spv".Length].Replace("_out_bf16", "");
        return name.EndsWith("_bf16", StringComparison.Ordinal) ? name[..^"_bf16".Length] : name;
    }
}

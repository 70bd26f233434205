using System.CommandLine;
using System.Globalization;
using Mamba2.Model.Ops;
using Mamba2.Model.IO;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Cli;

/// <summary>
/// <c>mamba2 ssd</c>: runs the SSD forward on tensors from a safetensors file named as mamba_chunk_scan_combined's
/// arguments and writes y and final_states, so users can compare with their PyTorch results. With a tensor dy (and
/// optionally dfinal_states) in the file it also runs the backward and writes grad_&lt;input&gt; for every input given.
/// </summary>
internal static class SsdCommand
{
    private static readonly string[] Required = ["x", "dt", "A", "B", "C"];
    private static readonly string[] Optional = ["D", "z", "dt_bias", "initial_states", "dt_rev", "B_rev", "C_rev"];
    private static readonly string[] Upstream = ["dy", "dfinal_states"];

    private static readonly Option<FileInfo> Input = new("--input") { Required = true, Description = "safetensors with x, dt, A, B, C and optionally D, z, dt_bias, initial_states; with dy (and optionally dfinal_states) the gradients are computed too (F32, F64, BF16 or F16)" };
    private static readonly Option<bool> AllowNonFinite = new("--allow-nonfinite") { Description = "run on inputs holding NaN or infinity (refused by default, naming the first)" };
    private static readonly Option<FileInfo> Output = new("--output") { Required = true, Description = "safetensors to write y, final_states and, given dy, grad_<input> to (F32; y and the gradients of x, B, C and z BF16 when those inputs are BF16 and --precision bf16 runs them as bf16 tensors)" };

    /// <summary>The inputs the SSD takes as bf16 tensors (with dy) when the file has them all as BF16.</summary>
    private static readonly string[] Bf16Capable = ["x", "B", "C", "z"];
    private static readonly Option<int> ChunkSize = new("--chunk-size") { DefaultValueFactory = _ => 256, Description = "chunk length (16..256)" };
    private static readonly Option<bool> DtSoftplus = new("--dt-softplus") { Description = "dt = softplus(dt + dt_bias)" };
    private static readonly Option<string?> DtLimit = new("--dt-limit") { Description = "MIN,MAX clamp of dt (default 0,inf as mamba_ssm)" };
    private static readonly Option<bool> Bidirectional = new("--bidirectional") { Description = "Bidirectional SSD: both scans from zero state; reads optional dt_rev, B_rev, C_rev (the reverse scan's own) and D as (b, L, h)" };
    private static readonly Option<string> BidirectionalMode = new("--bidirectional-mode")
    {
        DefaultValueFactory = _ => "sum",
        Description = "sum: y = SS(x) + flip(SS(flip(x))) + D x (Bi-Mamba2); shift: each scan's output moved one step, dropping a token's own term (Hydra)",
    };

    public static Command Create()
    {
        BidirectionalMode.AcceptOnlyFromAmong("sum", "shift");
        return CommonOptions.GpuCommand("ssd", "Run the chunked SSD (mamba_chunk_scan_combined) forward, and backward when the file has dy, on tensors from a safetensors file", Run,
            Input, Output, AllowNonFinite, ChunkSize, DtSoftplus, DtLimit, Bidirectional, BidirectionalMode);
    }

    private static int Run(ParseResult r)
    {
        var input = r.GetValue(Input)!;
        var output = r.GetValue(Output)!;
        CommonOptions.CheckInputFile("--input", input);
        CommonOptions.CheckOutputFile("--output", output, input);
        var limit = ParseLimit(r.GetValue(DtLimit));
        if (!r.GetValue(Bidirectional) && r.GetResult(BidirectionalMode) is { Implicit: false })
        {
            throw new ArgumentException("--bidirectional-mode needs --bidirectional.");
        }

        using var file = SafetensorsFile.Open(input.FullName);
        var missing = Required.Where(n => !file.Contains(n)).ToList();
        if (missing.Count > 0)
        {
            throw new KeyNotFoundException(
                $"{input.Name} lacks {string.Join(", ", missing)}; an SSD input needs {string.Join(", ", Required)} (optional: {string.Join(", ", Optional)}). It holds: {string.Join(", ", file.Names)}.");
        }

        if (file.Contains("dfinal_states") && !file.Contains("dy"))
        {
            throw new KeyNotFoundException($"{input.Name} has dfinal_states but no dy; the backward needs dy (b, L, h, p).");
        }

        var host = Required.Concat(Optional).Concat(Upstream).Where(file.Contains).ToDictionary(n => n, n => ReadFloat(file, n));
        if (!r.GetValue(AllowNonFinite))
        {
            // A NaN or infinity in an input would only come back as NaN outputs, with nothing saying where from.
            foreach (var (name, t) in host)
            {
                var at = Array.FindIndex(t.Data, v => !float.IsFinite(v));
                if (at >= 0)
                {
                    throw new InvalidDataException($"{input.Name}: {name}[{at}] (flat index) is {t.Data[at]}; the SSD's outputs would be NaN (--allow-nonfinite runs it anyway).");
                }
            }
        }

        using var device = CommonOptions.Open(r);
        if (CommonOptions.ResolvePrecision(r, device) is not { } precision)
        {
            return 2;
        }

        // BF16 x, B, C (and z) stay bf16 where the SSD takes them so (precision bf16, no reverse-scan tensors), as
        // mamba_ssm keeps a bf16 call's activations; anything else is widened to fp32, exactly.
        var bidirectional = r.GetValue(Bidirectional);
        var ownReverse = new[] { "dt_rev", "B_rev", "C_rev" }.Any(host.ContainsKey);   // with these the bidirectional forms take fp32
        var bf16Tensors = precision == Precision.Bf16 && !ownReverse && Bf16Capable.Where(host.ContainsKey).All(n => host[n].DType == SafetensorsDType.BF16);
        TensorDType TypeOf(string name) =>
            bf16Tensors && (Bf16Capable.Contains(name) || name == "dy" && host[name].DType == SafetensorsDType.BF16) ? TensorDType.BF16 : TensorDType.F32;
        var tensors = host.ToDictionary(kv => kv.Key, kv => Tensor.FromArray(device, kv.Key, kv.Value.Data, TypeOf(kv.Key), kv.Value.Shape));
        try
        {
            var options = new SsdOptions
            {
                ChunkSize = r.GetValue(ChunkSize),
                D = tensors.GetValueOrDefault("D"),
                Z = tensors.GetValueOrDefault("z"),
                DtBias = tensors.GetValueOrDefault("dt_bias"),
                InitialStates = tensors.GetValueOrDefault("initial_states"),
                DtSoftplus = r.GetValue(DtSoftplus),
                DtLimit = limit,
                Precision = precision,
                Direction = !bidirectional ? SsdDirection.Causal
                    : r.GetValue(BidirectionalMode) == "shift" ? SsdDirection.BidirectionalShift : SsdDirection.BidirectionalSum,
                DtRev = tensors.GetValueOrDefault("dt_rev"),
                BRev = tensors.GetValueOrDefault("B_rev"),
                CRev = tensors.GetValueOrDefault("C_rev"),
            };
            var (x, dt, a, b, c) = (tensors["x"], tensors["dt"], tensors["A"], tensors["B"], tensors["C"]);
            using var result = SsdOp.Forward(x, dt, a, b, c, options);
            var written = new List<HostTensor> { Written("y", result.Y), Written("final_states", result.FinalStates) };
            if (tensors.TryGetValue("dy", out var dy))
            {
                using var grads = SsdOp.Backward(dy, result, tensors.GetValueOrDefault("dfinal_states"));
                written.AddRange(grads.Named().Select(g => Written("grad_" + g.Input, g.Gradient)));
            }

            SafetensorsWriter.Write(output.FullName, written);
            Console.WriteLine($"wrote {string.Join(", ", written.Select(t => $"{t.Name} {ShapeOps.Format(t.Shape)}"))} to {output.FullName} ({device.Name})");
            return 0;
        }
        finally
        {
            foreach (var t in tensors.Values)
            {
                t.Dispose();
            }
        }
    }

    /// <summary>A device tensor as written: F32, or BF16 for a bf16 tensor (its values are bf16 already: exact).</summary>
    private static HostTensor Written(string name, Tensor t)
    {
        var wide = HostTensor.FromFloat32(name, t.ToArray(), [.. t.Shape]);
        return t.DType == TensorDType.BF16 ? wide.Convert(SafetensorsDType.BF16) : wide;
    }

    private static (float[] Data, int[] Shape, SafetensorsDType DType) ReadFloat(SafetensorsFile file, string name)
    {
        var info = file.Info(name);
        if (info.DType is not (SafetensorsDType.F32 or SafetensorsDType.F64 or SafetensorsDType.BF16 or SafetensorsDType.F16))
        {
            throw new InvalidDataException($"{name} is {info.DType.HeaderName()}; SSD inputs must be F32, F64, BF16 or F16.");
        }

        var t = file.Read(name);
        var shape = t.Shape;
        if (shape.Length == 0)
        {
            throw new ArgumentException($"{name} is a scalar; expected a tensor (see mamba_chunk_scan_combined's shapes).");
        }

        return (t.ToFloat32(), shape, info.DType);
    }

    private static (float, float) ParseLimit(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return (0f, float.PositiveInfinity);
        }

        var parts = text.Split(',');
        if (parts.Length != 2 || !TryParse(parts[0], out var min) || !TryParse(parts[1], out var max))
        {
            throw new FormatException($"--dt-limit must be MIN,MAX (e.g. 0.001,0.1 or 0,inf), got '{text}'.");
        }

        return (min, max);
    }

    private static bool TryParse(string s, out float v)
    {
        s = s.Trim();
        if (s is "inf" or "+inf" or "Infinity")
        {
            v = float.PositiveInfinity;
            return true;
        }

        return float.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out v);
    }
}

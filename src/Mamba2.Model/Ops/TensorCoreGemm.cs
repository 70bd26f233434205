using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>The type a GEMM's operands are rounded to before they are multiplied (accumulation is always fp32).</summary>
public enum GemmOperands
{
    /// <summary>Exact fp32 products on the shader cores (<c>nn/gemm.comp</c>, <c>nn/gemm_lanes.comp</c>).</summary>
    Fp32,

    /// <summary>
    /// Operands rounded to f16 (11-bit significand) on tensor cores. Values beyond f16's range (65504) become
    /// infinite and below 6e-8 zero: the caller keeps operands in range (or scales them).
    /// </summary>
    F16,

    /// <summary>Operands rounded to bf16 (8-bit significand, fp32's range) on tensor cores.</summary>
    Bf16,

    /// <summary>
    /// Operands rounded to bf16 as <see cref="Bf16"/>, multiplied on f16 tensor cores: each tensor (each SSD slice)
    /// times the power of two that puts its largest |x| in [2^14, 2^15), where f16 holds every bf16 value down to
    /// 2^-32 of the largest exactly. bf16's products on devices whose cooperative matrices take f16 only; always
    /// <see cref="OperandStaging.Converted"/> (the scale needs the tensor's max first).
    /// </summary>
    Bf16ViaF16,
}

/// <summary>What each <see cref="GemmOperands"/> is on the tensor cores.</summary>
public static class GemmOperandsInfo
{
    /// <summary>The cooperative matrices' element type: "f16" or "bf16" (fp32: none).</summary>
    public static string MatrixType(this GemmOperands operands) => operands.Kernel() == GemmOperands.F16 ? "f16" : "bf16";

    /// <summary>The kernels' operand type (the variant that multiplies these operands): F16 or Bf16.</summary>
    internal static GemmOperands Kernel(this GemmOperands operands) => operands switch
    {
        GemmOperands.F16 or GemmOperands.Bf16ViaF16 => GemmOperands.F16,
        GemmOperands.Bf16 => GemmOperands.Bf16,
        _ => throw new ArgumentOutOfRangeException(nameof(operands), $"{operands} operands are not multiplied on tensor cores."),
    };

    /// <summary>Whether each tensor is scaled by a power of two into f16's range (a max pass first).</summary>
    internal static bool Scaled(this GemmOperands operands) => operands.Kernel() == GemmOperands.F16;
}

/// <summary>Which cooperative-matrix extension a tensor-core kernel is built on.</summary>
public enum TensorCoreApi
{
    /// <summary>The portable KHR variant where the device runs it, else NV coopmat2.</summary>
    Auto,

    /// <summary>VK_KHR_cooperative_matrix: subgroup-scope fragments (every vendor).</summary>
    Khr,

    /// <summary>VK_NV_cooperative_matrix2: workgroup-scope matrices (NVIDIA; also Mesa's lavapipe).</summary>
    NvCooperativeMatrix2,
}

/// <summary>Where fp32 operands become the 16-bit operands the tensor cores take.</summary>
public enum OperandStaging
{
    /// <summary>Per variant and operand type (<see cref="TensorCoreGemm.ResolveStaging"/>).</summary>
    Auto,

    /// <summary>The GEMM reads fp32 and rounds each element as it stages it in shared memory.</summary>
    InKernel,

    /// <summary>
    /// Passes write 16-bit copies of A and B (scratch of the stream), which the GEMM reads: half the bytes in its K
    /// loop and nothing to convert; NV coopmat2 then loads them straight from memory through tensor layouts. Each
    /// copy is the tensor times a power of two that puts its largest |x| in [2^14, 2^15) (divided out exactly in
    /// the epilogue), so f16 operands neither overflow nor lose small tensors (gradients) to subnormals.
    /// </summary>
    Converted,
}

/// <summary>
/// Tile of the tensor-core GEMM (<c>shaders/tc/gemm_coopmat.comp</c>): a BM x BN output tile per workgroup, K in
/// BK slices. KHR: subgroups own WM x WN blocks of TM x TN x TK fragments (a shape the device lists).
/// NV coopmat2: one workgroup-scope matrix of <see cref="Threads"/> invocations (WM, WN, TM, TN, TK unused).
/// <see cref="Buffers"/>: shared tiles the K slices alternate between; 1 fits wider tiles in the same shared memory
/// at the cost of a second barrier per slice.
/// </summary>
public sealed record TensorCoreTile(TensorCoreApi Api, uint BM, uint BN, uint BK, uint WM, uint WN, uint TM, uint TN, uint TK, uint Threads,
    OperandStaging Staging = OperandStaging.InKernel, uint Buffers = 2)
{
    /// <summary>NV coopmat2 on converted operands loads them from memory itself: no shared tiles of ours.</summary>
    public bool Direct => Api == TensorCoreApi.NvCooperativeMatrix2 && Staging == OperandStaging.Converted;

    private const uint Pad = 8;  // the shader's PAD

    /// <summary>Shared memory the shader declares for this tile and these transposes.</summary>
    public uint SharedBytes(bool transposeA, bool transposeB)
    {
        var a = transposeA ? BK * (BM + Pad) : BM * (BK + Pad);
        var b = transposeB ? BN * (BK + Pad) : BK * (BN + Pad);
        var staging = Api == TensorCoreApi.Khr ? BM / WM * (BN / WN) * TM * TN * sizeof(float) : 0;  // one fragment per subgroup
        return Direct ? 0 : Buffers * (a + b) * sizeof(ushort) + staging;  // buffers of 16-bit operands
    }

    internal GemmCoopmatSpec Specialization(bool transposeA, bool transposeB) =>
        new(Threads, BM, BN, BK, WM, WN, TM, TN, TK, transposeA, transposeB, Buffers);

    public override string ToString() => (Api == TensorCoreApi.Khr
        ? $"khr {BM}x{BN}x{BK}/{WM}x{WN} frag {TM}x{TN}x{TK}"
        : $"coopmat2 {BM}x{BN}x{BK} ({Threads} invocations)") + (Buffers == 1 ? ", one buffer" : "")
        + (Staging == OperandStaging.Converted ? ", converted" : "");
}

/// <summary>
/// C = alpha * op(A) op(B) + beta * C with fp32 tensors and tensor-core products: operands rounded to f16 or bf16
/// as they are staged, fp32 accumulation. Same shapes and conventions as <see cref="Gemm"/>, which calls it for
/// <see cref="GemmOperands.F16"/> and <see cref="GemmOperands.Bf16"/>.
/// </summary>
public static class TensorCoreGemm
{
    /// <summary>True when this build has the variant and <paramref name="device"/> can run it.</summary>
    public static bool IsAvailable(GpuDevice device, GemmOperands operands, TensorCoreApi api = TensorCoreApi.Auto) =>
        Resolve(device.Capabilities, operands, Requested(device, api)) is not null;

    /// <summary>
    /// Whether products in <paramref name="operands"/> with <paramref name="staging"/> (Auto: per variant) read
    /// converted 16-bit copies of fp32 tensors on <paramref name="device"/> (in the variant its tuning requests): then
    /// one copy packed for a tensor serves each of its products, the same bits as converting it in each.
    /// </summary>
    internal static bool Converts(GpuDevice device, GemmOperands operands, OperandStaging staging) =>
        Resolve(device.Capabilities, operands, Requested(device, TensorCoreApi.Auto)) is { } api
        && ResolveStaging(device, operands, api, staging) == OperandStaging.Converted;

    /// <summary><paramref name="api"/>, or the variant <see cref="OpTuning.GemmApi"/> names where it is Auto.</summary>
    private static TensorCoreApi Requested(GpuDevice device, TensorCoreApi api) =>
        api == TensorCoreApi.Auto && OpTuning.Of(device).GemmApi is { } tuned ? tuned : api;

    /// <summary>The variant <paramref name="text"/> names (MAMBA2_GEMM_API: khr, coopmat2; auto or nothing: null).</summary>
    public static TensorCoreApi? ParseApi(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        null or "" or "auto" => null,
        "khr" => TensorCoreApi.Khr,
        "coopmat2" => TensorCoreApi.NvCooperativeMatrix2,
        var other => throw new ArgumentException($"{ApiVariable}={other}: expected khr, coopmat2 or auto."),
    };

    /// <summary>
    /// The staging <paramref name="staging"/> stands for with the variant <paramref name="api"/> (Auto, measured on
    /// the H200: Converted for NV coopmat2, which then loads the copies straight from memory, and for KHR with bf16
    /// operands, whose rounding by hand costs more in the K loop than a pass; InKernel for KHR with f16 operands;
    /// Converted for bf16 values as f16, which need their tensor's scale).
    /// </summary>
    public static OperandStaging ResolveStaging(GpuDevice device, GemmOperands operands, TensorCoreApi api, OperandStaging staging) =>
        staging switch
        {
            OperandStaging.Auto when operands == GemmOperands.Bf16ViaF16 => OperandStaging.Converted,
            OperandStaging.Auto when (api == TensorCoreApi.NvCooperativeMatrix2 || operands == GemmOperands.Bf16)
                && Shaders.GemmCoopmat(operands, api, input16: true).WhyNotRunnable(device.Capabilities) is null => OperandStaging.Converted,
            OperandStaging.Auto => OperandStaging.InKernel,
            _ => staging,
        };

    /// <summary>
    /// The variant <paramref name="api"/> stands for on a device with <paramref name="caps"/> (Auto: KHR where it
    /// runs, the fastest measured in the H200's training step and the one every vendor has; else NV coopmat2), or
    /// null when it was not compiled, the device lacks its features, or no tile fits.
    /// </summary>
    public static TensorCoreApi? Resolve(DeviceCapabilities caps, GemmOperands operands, TensorCoreApi api)
    {
        if (operands == GemmOperands.Fp32)
        {
            return null;
        }

        bool Runs(TensorCoreApi a)
        {
            return Shaders.GemmCoopmat(operands, a).WhyNotRunnable(caps) is null && ChooseTile(caps, operands, a, 0, 0) is not null;
        }

        return api switch
        {
            TensorCoreApi.Auto when Runs(TensorCoreApi.Khr) => TensorCoreApi.Khr,
            TensorCoreApi.Auto when Runs(TensorCoreApi.NvCooperativeMatrix2) => TensorCoreApi.NvCooperativeMatrix2,
            TensorCoreApi.Auto => null,
            _ => Runs(api) ? api : null,
        };
    }

    /// <summary>What a GEMM with each operand type would run on a device with <paramref name="caps"/>, one line each.</summary>
    public static IEnumerable<string> Describe(DeviceCapabilities caps)
    {
        foreach (var operands in new[] { GemmOperands.F16, GemmOperands.Bf16, GemmOperands.Bf16ViaF16 })
        {
            var api = Resolve(caps, operands, TensorCoreApi.Auto);
            yield return api is { } a
                ? $"GEMM {operands}: {ChooseTile(caps, operands, a, 4096, 4096)}" + (a == TensorCoreApi.Khr && Resolve(caps, operands, TensorCoreApi.NvCooperativeMatrix2) is not null ? " (coopmat2 also runs)" : "")
                : $"GEMM {operands}: none ({Why(caps, operands, TensorCoreApi.Auto)})";
        }
    }

    /// <summary>
    /// Why a GEMM with these operands, variant and staging cannot run on <paramref name="device"/> (the build or
    /// the device lacks it, or no tile fits), or null when it can: the checks <see cref="Gemm.Run"/> makes first.
    /// </summary>
    public static string? WhyNot(GpuDevice device, GemmOperands operands, TensorCoreApi api = TensorCoreApi.Auto,
        OperandStaging staging = OperandStaging.Auto)
    {
        api = Requested(device, api);
        if (Resolve(device.Capabilities, operands, api) is not { } resolved)
        {
            return $"Gemm with {operands} operands needs tensor cores, which {device.Name} cannot use here: {Why(device.Capabilities, operands, api)}";
        }

        var converted = ResolveStaging(device, operands, resolved, staging) == OperandStaging.Converted;
        if (operands == GemmOperands.Bf16ViaF16 && !converted)
        {
            return $"Gemm with {operands} operands rounds and scales them in a pass first: staging {OperandStaging.Converted} (or Auto), not {staging}";
        }

        return Shaders.GemmCoopmat(operands, resolved, converted).WhyNotRunnable(device.Capabilities) is { } why
            ? $"Gemm with {operands} operands{(converted ? " converted first" : "")}: {why}"
            : null;
    }

    /// <summary>
    /// Whether a product with these operands can write a bf16 C on <paramref name="device"/> (the KHR variant's
    /// OUT_BF16 build, chosen or tuned; 16-bit storage): what a module asks before it makes a bf16 output.
    /// </summary>
    public static bool WritesBf16(GpuDevice device, GemmOperands operands) =>
        device.Capabilities.Storage16Bit && Requested(device, TensorCoreApi.Auto) != TensorCoreApi.NvCooperativeMatrix2
        && Resolve(device.Capabilities, operands, TensorCoreApi.Khr) is not null
        && Shaders.GemmCoopmat(operands, TensorCoreApi.Khr, ResolveStaging(device, operands, TensorCoreApi.Khr, OperandStaging.Auto) == OperandStaging.Converted,
            outBf16: true).WhyNotRunnable(device.Capabilities) is null;

    internal static void Run(GemmInput a, GemmInput b, Tensor c, int m, int n, int k, int batch, bool batched,
        bool transposeA, bool transposeB, float alpha, float beta, GemmOperands operands, TensorCoreApi api,
        CommandStream? stream, TensorCoreTile? tile, OperandStaging staging = OperandStaging.Auto)
    {
        const string op = "Gemm";
        var device = c.Device;
        var outBf16 = c.DType == TensorDType.BF16;
        api = Requested(device, api);
        if (outBf16)
        {
            // The bf16 epilogue is the KHR variant's: an Auto choice takes KHR, an explicit coopmat2 one is refused.
            if ((tile?.Api ?? api) == TensorCoreApi.NvCooperativeMatrix2)
            {
                throw new ArgumentException($"{op}: {c} is bf16, which only the KHR tensor-core variant writes; {TensorCoreApi.NvCooperativeMatrix2} was asked for.", nameof(c));
            }

            api = TensorCoreApi.Khr;
        }

        if (WhyNot(device, operands, tile?.Api ?? api, tile?.Staging ?? staging) is { } why)
        {
            throw new MissingFeatureException(why + ".");
        }

        var resolved = Resolve(device.Capabilities, operands, tile?.Api ?? api)!.Value;
        var resolvedStaging = ResolveStaging(device, operands, resolved, staging);
        var t = tile ?? Tuned(device, operands, resolved, resolvedStaging) ?? ChooseTile(device.Capabilities, operands, resolved, m, n, resolvedStaging)!;
        Validate(device.Capabilities, t, transposeA, transposeB);
        var converted = t.Staging == OperandStaging.Converted;
        // GetKernel refuses a variant the build or device lacks (the bf16-C one is not among WhyNot's checks).
        var kernel = device.GetKernel(Shaders.GemmCoopmat(operands, resolved, converted, outBf16), t.Specialization(transposeA, transposeB));
        int Dim(GemmInput x, int i) => x.Shaped.Shape[batched ? i + 1 : i];
        var (groups, push) = Gemm.Launch(device, t.BM, t.BN, m, n, k, batch, batched, Dim(a, 1), Dim(b, 1), alpha, beta);
        var tiles = (long)((m + t.BM - 1) / t.BM) * ((n + t.BN - 1) / t.BN);
        // A bf16 C is written once, rounded from the whole sum: no split K (its partials would be summed in fp32 first).
        var splits = batched || beta != 0f || outBf16 ? 1 : OpTuning.Of(device).GemmSplitK is { } forced ? UsableSplits(forced, k, t.BK) : SplitsFor(tiles, k, t.BK);
        if ((ulong)splits * (ulong)m * (ulong)n * sizeof(float) > device.Capabilities.MaxStorageBufferRange)
        {
            splits = 1;   // the partials would not fit one binding
        }

        if (splits > 1)
        {
            // Split K: split s multiplies K columns [s ks, (s + 1) ks) as batch entry s (A and B strided along K)
            // into its own partial C, the last the columns that remain; a fixed-order sum adds the partials into C
            // (same inputs, same bits).
            (groups, push) = Gemm.SplitAlongK(device, groups, push, splits, SplitLength(k, splits, t.BK), transposeA, transposeB);
        }

        Shaders.EnsureBindable(op, a.Tensor, b.Tensor, c);
        Shaders.RunIn(device, stream, s =>
        {
            var partials = splits > 1 ? s.Own(device.CreateBuffer<float>((long)splits * m * n, "gemm.split_k_partials")) : null;
            BufferBinding output = partials ?? Shaders.Slice(c, 0, c.Length, outBf16);
            if (!converted)
            {
                s.Dispatch(kernel, groups, push, a.Tensor!.Buffer, b.Tensor!.Buffer, output);
            }
            else
            {
                var (a16, aScale) = Operand16(s, a, operands);
                var (b16, bScale) = Operand16(s, b, operands);
                s.Dispatch(kernel, groups, push, a16, b16, output, aScale, bScale);
            }

            if (partials is not null)
            {
                Reductions.Sum(s, partials, c.Buffer, (uint)splits, (uint)((long)m * n));
            }
        });
    }

    /// <summary>The tile <see cref="OpTuning.GemmTile"/> names, for this variant and staging; null when it names none.</summary>
    private static TensorCoreTile? Tuned(GpuDevice device, GemmOperands operands, TensorCoreApi api, OperandStaging staging)
    {
        if (OpTuning.Of(device).GemmTile is not { } text)
        {
            return null;
        }

        try
        {
            var t = ParseTile(device.Capabilities, operands, api, text) with { Staging = staging };
            return FitsEveryTranspose(device.Capabilities, t)
                ? t
                : throw new ArgumentException($"{t} does not fit this device or breaks the tile rules");
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"{TileVariable}={text}: {e.Message}");
        }
    }

    /// <summary>
    /// How many parts to split K into: 1 unless the output has too few tiles to fill a large GPU (fewer than 256)
    /// and K is long; then the most parts (8, 4 or 2) that keep each at least 2048 long and the tiles times parts
    /// within 2048 (the dW products of the projections: K = tokens; the cap lets the 370m in_proj's take 8 parts,
    /// measured faster than 4 in docs/PERF.md). Parts are multiples of the tile's BK but the last, which takes what
    /// remains (the LM head's d hidden: K = a vocabulary such as 50,280).
    /// </summary>
    internal static int SplitsFor(long tiles, int k, uint bk)
    {
        if (tiles >= 256)
        {
            return 1;
        }

        foreach (var s in new[] { 8, 4, 2 })
        {
            if (k / s >= 2048 && tiles * s <= 2048 && k - (s - 1) * SplitLength(k, s, bk) > 0)
            {
                return s;
            }
        }

        return 1;
    }

    /// <summary>The environment variable of <see cref="OpTuning.GemmApi"/>.</summary>
    public const string ApiVariable = "MAMBA2_GEMM_API";

    /// <summary>The environment variable of <see cref="OpTuning.GemmSplitK"/>.</summary>
    public const string SplitKVariable = "MAMBA2_GEMM_SPLIT_K";

    /// <summary>At most <paramref name="parts"/> parts, as many as leave the last part some of K.</summary>
    internal static int UsableSplits(int parts, int k, uint bk)
    {
        var s = Math.Max(1, parts);
        while (s > 1 && k - (s - 1) * SplitLength(k, s, bk) <= 0)
        {
            s--;
        }

        return s;
    }

    /// <summary>The K of every part but the last when K is split into <paramref name="splits"/>: K / splits rounded up to BK.</summary>
    internal static int SplitLength(int k, int splits, uint bk) => (int)(((k + splits - 1) / splits + bk - 1) / bk * bk);

    /// <summary>
    /// What the converted variant reads for operand <paramref name="x"/>, and the word holding its scale's bits: a
    /// packed operand as it is, with its own scale word (no copy: a product of two packed operands records nothing
    /// but itself), an fp32 tensor converted into a copy and a scale word the stream owns.
    /// </summary>
    private static (GpuBuffer Words, GpuBuffer Scale) Operand16(CommandStream s, GemmInput x, GemmOperands operands)
    {
        if (x.Packed is { } packed)
        {
            return (packed.Words, packed.ScaleBits);
        }

        var scale = s.Own(x.Tensor!.Device.CreateBuffer<uint>(1, "gemm.operand_scale"));
        if (operands.Scaled())
        {
            s.Fill(scale, 0u);   // absmax's max starts from 0 (bf16: the conversion writes its scale word)
        }

        return (ToOperand16(s, x.Tensor!, operands, scale, 0, s.Own(NewWords(x.Tensor!, operands))), scale);
    }

    private static GpuBuffer<uint> NewWords(Tensor x, GemmOperands operands) =>
        x.Device.CreateBuffer<uint>((x.Length + 1) / 2, $"{x.Name}.{operands.ToString().ToLowerInvariant()}");

    /// <summary>
    /// <paramref name="x"/> packed into <paramref name="into"/> (its shape and operand type) by the conversion pass
    /// alone: the kernels that wrote x folded its largest |x| into into's zeroed scale word as they went
    /// (fold_absmax.glsl), so no pass reads x for it.
    /// </summary>
    internal static void PackFolded(CommandStream s, Tensor x, PackedOperand into)
    {
        ShapeOps.Expect(into, nameof(into), $"Gemm.PackFolded ({x} given)", [.. x.Shape]);
        ToOperand16(s, x, into.Operands, into.ScaleBits, 0, into.Words, maxFolded: true);
    }

    /// <summary>
    /// <paramref name="x"/> times its scale as 16-bit operands (f16, bf16 rounded to nearest even, or bf16 values as
    /// f16) into <paramref name="words"/>; slot <paramref name="slot"/> of <paramref name="scales"/> (zeroed by the
    /// caller) gets x's max |x| first, for f16 words only (unless x's writers <paramref name="maxFolded"/> it): bf16
    /// has fp32's range, so no pass reads x for it and the conversion writes the slot's scale of 1 itself.
    /// </summary>
    private static GpuBuffer ToOperand16(CommandStream s, Tensor x, GemmOperands operands, GpuBuffer scales, uint slot, GpuBuffer<uint> words,
        bool maxFolded = false)
    {
        var device = x.Device;
        if (operands.Scaled() && !maxFolded)
        {
            // A few workgroups walk the tensor with a stride: one atomic each (one per 256 elements serialized).
            var local = Shaders.PowerOfTwoLocal(device);
            var groups = Math.Min(Shaders.Groups1D(device, x.Length, local), AbsMaxGroups);
            s.Dispatch(device.GetKernel(Shaders.AbsMax, new LocalSize(local)), (groups, 1, 1), new ScalePush((uint)x.Length, slot), x.Buffer, scales);
        }

        var local1 = Shaders.Local1D(device);
        var form = operands switch
        {
            GemmOperands.F16 => Operand16Form.F16,
            GemmOperands.Bf16 => Operand16Form.Bf16,
            GemmOperands.Bf16ViaF16 => Operand16Form.Bf16ViaF16,
            _ => throw new ArgumentOutOfRangeException(nameof(operands)),
        };
        s.Dispatch(device.GetKernel(Shaders.ToOperand16, new ToOperand16Spec(local1, form)),
            (Shaders.Groups1D(device, (x.Length + 3) / 4, local1), 1, 1), new ScalePush((uint)x.Length, slot), x.Buffer, words, scales);   // four elements an invocation
        return words;
    }

    /// <summary>The work of <see cref="Gemm.PackInto"/> once its checks have passed.</summary>
    internal static void PackInto(Tensor x, PackedOperand into, CommandStream? stream) =>
        Shaders.RunIn(x.Device, stream, s =>
        {
            if (into.Operands.Scaled())
            {
                s.Fill(into.ScaleBits, 0u);
            }

            ToOperand16(s, x, into.Operands, into.ScaleBits, 0, into.Words);
        });

    /// <summary>
    /// Room for a packed copy of a <paramref name="shape"/> tensor, for a kernel that writes the operands itself
    /// (<see cref="RmsNorm.ForwardPacked"/>); its scale is set by that writer.
    /// </summary>
    internal static PackedOperand EmptyPacked(GpuDevice device, string name, int[] shape, GemmOperands operands)
    {
        var length = ShapeOps.Elements(shape, name);
        var words = device.CreateBuffer<uint>(Math.Max(1, (length + 1) / 2), $"{name}.{operands.ToString().ToLowerInvariant()}");
        try
        {
            return new PackedOperand(device, name, [.. shape], operands, words, device.CreateBuffer<uint>(1, $"{name}.scale"));
        }
        catch
        {
            words.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Room for the operands of an fp32 tensor whose writers fold its scale as they go (<see cref="PackFolded"/>),
    /// handed to <paramref name="keep"/> (which owns it) and its scale word zeroed in <paramref name="st"/>; null
    /// where <paramref name="precision"/>'s products take no scaled operands (fp32, bf16 on bf16 matrices).
    /// </summary>
    internal static PackedOperand? EmptyFolded(CommandStream st, Func<PackedOperand, PackedOperand> keep, GpuDevice device, string name, int[] shape,
        Precision precision)
    {
        if (precision == Precision.Fp32 || !precision.Operands(device).Scaled())
        {
            return null;
        }

        var packed = keep(EmptyPacked(device, name, shape, precision.Operands(device)));
        st.Fill(packed.ScaleBits, 0u);
        return packed;
    }

    /// <summary>The work of <see cref="Gemm.Pack"/> once its checks have passed.</summary>
    internal static PackedOperand Pack(Tensor x, GemmOperands operands, CommandStream? stream)
    {
        var device = x.Device;
        Shaders.EnsureBindable("Gemm.Pack", x);
        GpuBuffer<uint>? words = null;
        GpuBuffer<uint>? scale = null;
        try
        {
            words = NewWords(x, operands);
            scale = device.CreateBuffer<uint>(1, $"{x.Name}.scale");
            var packed = new PackedOperand(device, x.Name, [.. x.Shape], operands, words, scale);
            PackInto(x, packed, stream);
            return packed;
        }
        catch
        {
            words?.Dispose();
            scale?.Dispose();
            throw;
        }
    }

    private const uint AbsMaxGroups = 1024;

    /// <summary>128 x 128 output tiles from which a product takes them rather than 128 x 256 (KHR).</summary>
    private const long ManyTiles = 512;

    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private readonly record struct ScalePush(uint Count, uint Slot);

    /// <summary>
    /// A tile for this device: KHR fragments of a listed shape with these operand types (16x16x16 preferred): 128 x
    /// 128 tiles of 4 subgroups where the output has at least 512 of them, else 128 x 256 of 8 where it fills
    /// them (both with fragments of 16 x 16 or larger), 128 x 128 of 8, or 64 x 64 of 4; coopmat2 tiles from a
    /// listed flexible shape. Null when the device lists no shape for these operands or no tile fits its limits.
    /// </summary>
    public static TensorCoreTile? ChooseTile(DeviceCapabilities caps, GemmOperands operands, TensorCoreApi api, int m, int n,
        OperandStaging staging = OperandStaging.InKernel)
    {
        if (staging == OperandStaging.Auto)
        {
            throw new ArgumentException("ChooseTile: resolve the staging first (ResolveStaging).", nameof(staging));
        }

        var type = operands.MatrixType();
        var candidates = new List<TensorCoreTile>();
        if (api == TensorCoreApi.Khr)
        {
            var shape = KhrShape(caps, operands);
            if (shape is null)
            {
                return null;
            }

            var bk = shape.K * Math.Max(1, 32 / shape.K);
            var w = caps.SubgroupSize;
            if (m >= 128 && n >= 128 && (long)((m + 127) / 128) * ((n + 127) / 128) >= ManyTiles && shape.M >= 16 && shape.N >= 16)
            {
                // 4 subgroups of 64 x 64 in one shared buffer: two workgroups an SM, one's barriers and loads
                // covered by the other's products; the fastest measured where the output has tiles enough to fill
                // the GPU many times over (docs/PERF.md). Fewer tiles (weight gradients: K long, splits) take 128 x 256.
                // Fragments of at least 16 x 16 only, where it was measured: with 8 x 8 ones a 64 x 64 block is 64
                // accumulators a subgroup.
                candidates.Add(new(api, 128, 128, bk, 64, 64, shape.M, shape.N, shape.K, 4 * w, staging, Buffers: 1));
            }

            if (m >= 128 && n >= 256 && shape.M >= 16 && shape.N >= 16)
            {
                // 8 subgroups of 64 x 64 in one shared buffer: the fastest KHR tile measured at every projection
                // shape (docs/PERF.md); two buffers of it exceed NVIDIA's shared memory per workgroup. 16 x 16
                // fragments or larger, as above: with lavapipe's 8 x 8 ones its compile took LLVM over ten minutes.
                candidates.Add(new(api, 128, 256, bk, 64, 64, shape.M, shape.N, shape.K, 8 * w, staging, Buffers: 1));
            }

            if (m >= 128 && n >= 128)
            {
                candidates.Add(new(api, 128, 128, bk, 64, 32, shape.M, shape.N, shape.K, 8 * w, staging));
            }

            candidates.Add(new(api, 64, 64, bk, 32, 32, shape.M, shape.N, shape.K, 4 * w, staging));
            candidates.Add(new(api, 2 * shape.M, 2 * shape.N, bk, shape.M, shape.N, shape.M, shape.N, shape.K, 4 * w, staging));
        }
        else if (caps.CooperativeMatrix2 is { } direct && staging == OperandStaging.Converted)
        {
            // Straight from memory (no shared tiles of ours): the widest tile the problem fills; 128 x 256 was the
            // fastest measured on the H200 (docs/PERF.md).
            foreach (var f in direct.FlexibleShapes.Where(s => s.AType == type && s.BType == type && s.CType == "f32" && s.ResultType == "f32")
                .OrderByDescending(s => s.WorkgroupInvocations))
            {
                uint Round(uint v, uint g) => (v + g - 1) / g * g;
                TensorCoreTile Tile(uint bm, uint bn, uint k) =>
                    new(api, Round(bm, f.MGranularity), Round(bn, f.NGranularity), Round(k, f.KGranularity), 0, 0, 0, 0, 0, f.WorkgroupInvocations, staging);
                if (m >= 128 && n >= 256)
                {
                    candidates.Add(Tile(128, 256, 32));
                }

                if (m >= 256 && n >= 128)
                {
                    candidates.Add(Tile(256, 128, 32));
                }

                if (m >= 128 && n >= 128)
                {
                    candidates.Add(Tile(128, 128, 64));
                }

                candidates.Add(Tile(64, 64, 32));
            }
        }
        else if (caps.CooperativeMatrix2 is { } limits)
        {
            // The entry with the most invocations first: a 128 x 128 matrix on one subgroup is a serial loop.
            foreach (var f in limits.FlexibleShapes.Where(s => s.AType == type && s.BType == type && s.CType == "f32" && s.ResultType == "f32")
                .OrderByDescending(s => s.WorkgroupInvocations))
            {
                uint Round(uint v, uint g) => (v + g - 1) / g * g;
                var bk = Round(32, f.KGranularity);
                if (m >= 128 && n >= 128)
                {
                    candidates.Add(new(api, Round(128, f.MGranularity), Round(128, f.NGranularity), bk, 0, 0, 0, 0, 0, f.WorkgroupInvocations, staging));
                }

                candidates.Add(new(api, Round(64, f.MGranularity), Round(64, f.NGranularity), bk, 0, 0, 0, 0, 0, f.WorkgroupInvocations, staging));
            }
        }

        return candidates.FirstOrDefault(t => FitsEveryTranspose(caps, t));
    }

    /// <summary>Whether <paramref name="t"/> fits the device whichever operands are transposed.</summary>
    private static bool FitsEveryTranspose(DeviceCapabilities caps, TensorCoreTile t) =>
        Fits(caps, t, true, true) && Fits(caps, t, false, false) && Fits(caps, t, true, false) && Fits(caps, t, false, true);

    /// <summary>
    /// The tile <paramref name="text"/> names for the variant <paramref name="api"/> (not Auto) with these operands:
    /// "BMxBNxBK/WMxWN" for KHR (fragments of the device's shape), "BMxBNxBK" for NV coopmat2, then optionally
    /// "/BUFFERS". The syntax is checked here; whether the tile fits the device, when it is used.
    /// </summary>
    public static TensorCoreTile ParseTile(DeviceCapabilities caps, GemmOperands operands, TensorCoreApi api, string text)
    {
        var basis = ChooseTile(caps, operands, api, 0, 0)
            ?? throw new ArgumentException($"tile '{text}': the device has no {api} tile for {operands} operands");
        var parts = text.Split('/');
        var khr = api == TensorCoreApi.Khr;
        uint Number(string p) => uint.TryParse(p, out var n) ? n : throw new ArgumentException($"tile '{text}': '{p}' is not a whole number");
        var v = parts[0].Split('x').Select(Number).ToArray();
        var w = khr && parts.Length > 1 ? parts[1].Split('x').Select(Number).ToArray() : [];
        var first = khr ? 2 : 1;   // the part after the tile's shape: buffers
        var buffers = parts.Length > first ? Number(parts[first]) : 2;
        if (v.Length != 3 || (khr && w.Length != 2) || parts.Length > first + 1 || (khr && (w[0] == 0 || w[1] == 0)))
        {
            throw new ArgumentException($"tile: expected {(khr ? "BMxBNxBK/WMxWN" : "BMxBNxBK")}[/BUFFERS], got '{text}'");
        }

        return khr
            ? basis with { BM = v[0], BN = v[1], BK = v[2], WM = w[0], WN = w[1], Threads = v[0] / w[0] * (v[1] / w[1]) * caps.SubgroupSize, Buffers = buffers }
            : basis with { BM = v[0], BN = v[1], BK = v[2], Buffers = buffers };
    }

    /// <summary>The environment variable of <see cref="OpTuning.GemmTile"/>.</summary>
    public const string TileVariable = "MAMBA2_GEMM_TC_TILE";

    /// <summary>
    /// The KHR cooperative-matrix shape tensor-core kernels build their tiles from: one the device lists for these
    /// operands with fp32 accumulation, 16x16x16 where listed, else the largest; null when none is listed.
    /// </summary>
    internal static CooperativeMatrixShape? KhrShape(DeviceCapabilities caps, GemmOperands operands)
    {
        var type = operands.MatrixType();
        return caps.CooperativeMatrixShapes
            .Where(s => s.AType == type && s.BType == type && s.CType == "f32" && s.ResultType == "f32")
            .OrderByDescending(s => s is { M: 16, N: 16, K: 16 }).ThenByDescending(s => s.M * s.N * s.K)
            .FirstOrDefault();
    }

    private static bool Fits(DeviceCapabilities caps, TensorCoreTile t, bool transposeA, bool transposeB)
    {
        var reserved = t.Api == TensorCoreApi.NvCooperativeMatrix2 ? caps.CooperativeMatrix2?.ReservedSharedMemory ?? 0 : 0;
        var maxThreads = caps.MaxWorkgroupInvocationsX;
        // The KHR shader loads operands in 16-byte words (4 fp32 or 8 converted 16-bit operands) and keeps each one
        // shared word; coopmat2 with converted operands loads through tensor layouts.
        var word = t.Staging == OperandStaging.Converted && t.Api == TensorCoreApi.Khr ? 8u : 4u;
        if (t.Buffers is not (1 or 2) || t.BM % word != 0 || t.BN % word != 0 || t.BK % word != 0 || (t.Api == TensorCoreApi.Khr && (t.TM % 4 != 0 || t.TN % 4 != 0 || t.TK % 4 != 0)))
        {
            return false;
        }

        if (t.Api == TensorCoreApi.NvCooperativeMatrix2)
        {
            maxThreads = Math.Min(maxThreads, caps.CooperativeMatrix2?.MaxWorkgroupSize ?? 0);
            if (Math.Max(t.BM, Math.Max(t.BN, t.BK)) > (caps.CooperativeMatrix2?.MaxDimension ?? 0))
            {
                return false;
            }
        }
        else if (t.WM == 0 || t.WN == 0 || t.BM % t.WM != 0 || t.BN % t.WN != 0 || t.WM % t.TM != 0 || t.WN % t.TN != 0
            || t.BK % t.TK != 0 || t.Threads != t.BM / t.WM * (t.BN / t.WN) * caps.SubgroupSize)
        {
            return false;
        }

        return t.Threads > 0 && t.Threads <= maxThreads && t.SharedBytes(transposeA, transposeB) + reserved <= caps.MaxSharedMemoryBytes;
    }

    private static void Validate(DeviceCapabilities caps, TensorCoreTile t, bool transposeA, bool transposeB)
    {
        if (!Fits(caps, t, transposeA, transposeB))
        {
            throw new ArgumentException(
                $"Gemm tile {t} does not fit this device (subgroup {caps.SubgroupSize}, {caps.MaxSharedMemoryBytes} bytes of shared memory, {caps.MaxWorkgroupInvocationsX} invocations) or breaks the tile rules (BM % WM, BN % WN, WM % TM, WN % TN, BK % TK all 0; BM, BN, BK multiples of 4, of 8 with converted operands on KHR, and the fragment shape of 4; 1 or 2 buffers).",
                "tile");
        }
    }

    private static string Why(DeviceCapabilities caps, GemmOperands operands, TensorCoreApi api)
    {
        var variants = (api == TensorCoreApi.Auto ? [TensorCoreApi.Khr, TensorCoreApi.NvCooperativeMatrix2] : new[] { api })
            .Select(x => Shaders.GemmCoopmat(operands, x));
        return string.Join("; ", variants.Select(v =>
            v.WhyNotRunnable(caps) ?? $"the device lists no {operands} shape with fp32 accumulation that fits a {v.Name} tile"));
    }
}

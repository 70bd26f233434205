using System.Reflection;

namespace Mamba2.Vulkan;

/// <summary>
/// What a kernel variant needs from both the shader compiler (it was compiled) and the device (it can run):
/// the tensor-core extensions. Names match the build's compiler probes (shaders/probes/&lt;name&gt;.comp).
/// </summary>
[Flags]
public enum ShaderFeatures
{
    None = 0,

    /// <summary>GL_KHR_cooperative_matrix / VK_KHR_cooperative_matrix: subgroup-scope matrices on every vendor.</summary>
    KhrCooperativeMatrix = 1,

    /// <summary>GL_NV_cooperative_matrix2 / VK_NV_cooperative_matrix2: workgroup-scope matrices, tensor layouts.</summary>
    NvCooperativeMatrix2 = 2,

    /// <summary>GL_EXT_bfloat16 / VK_KHR_shader_bfloat16 with bf16 cooperative matrices.</summary>
    Bfloat16 = 4,
}

/// <summary>
/// What the shader build of one assembly compiled: the compiler, the features it had, and the variants it left
/// out (read from the "shaders/build.txt" resource that build/Shaders.targets embeds).
/// </summary>
public sealed record ShaderBuild(string Compiler, ShaderFeatures Features, IReadOnlyList<ShaderBuild.Omission> Omitted)
{
    private static readonly Dictionary<Assembly, ShaderBuild> Cache = [];

    /// <summary>A variant the compiler could not build, and the probe names of the features it lacked.</summary>
    public sealed record Omission(string Variant, string Needs);

    public static readonly IReadOnlyList<(ShaderFeatures Feature, string ProbeName)> ProbeNames =
    [
        (ShaderFeatures.KhrCooperativeMatrix, "khr_coopmat"),
        (ShaderFeatures.NvCooperativeMatrix2, "nv_coopmat2"),
        (ShaderFeatures.Bfloat16, "bf16"),
    ];

    /// <summary>The build record of <paramref name="assembly"/>; an assembly without shaders has none.</summary>
    public static ShaderBuild Of(Assembly assembly)
    {
        lock (Cache)
        {
            if (!Cache.TryGetValue(assembly, out var build))
            {
                build = Read(assembly);
                Cache[assembly] = build;
            }

            return build;
        }
    }

    public static string Describe(ShaderFeatures features) =>
        features == ShaderFeatures.None
            ? "none"
            : string.Join(", ", ProbeNames.Where(p => features.HasFlag(p.Feature)).Select(p => p.ProbeName));

    private static ShaderBuild Read(Assembly assembly)
    {
        using var stream = assembly.GetManifestResourceStream("shaders/build.txt");
        if (stream is null)
        {
            return new ShaderBuild("(no shaders)", ShaderFeatures.None, []);
        }

        using var reader = new StreamReader(stream);
        var compiler = "?";
        var features = ShaderFeatures.None;
        var omitted = new List<Omission>();
        while (reader.ReadLine() is { } line)
        {
            var colon = line.IndexOf(':');
            if (colon < 0)
            {
                continue;
            }

            var value = line[(colon + 1)..].Trim();
            switch (line[..colon])
            {
                case "compiler":
                    compiler = value;
                    break;
                case "features":
                    foreach (var name in value.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                    {
                        features |= ProbeNames.FirstOrDefault(p => p.ProbeName == name).Feature;
                    }

                    break;
                case "omitted":
                    var parts = value.Split(" needs ", 2);
                    omitted.Add(new Omission(parts[0], parts.Length > 1 ? parts[1].Replace(';', ' ') : "?"));
                    break;
            }
        }

        return new ShaderBuild(compiler, features, omitted);
    }
}

using System.Text.Json;
using System.Text.Json.Serialization;

namespace Mamba2.Cli;

/// <summary>
/// Everything a training run is configured with, from defaults per task, then a JSON config file, then flags. Saved
/// into the run directory as train.json.
/// </summary>
internal sealed record TrainSettings
{
    public string Task { get; init; } = "selective-copy";

    public string? Data { get; init; }

    /// <summary>Text fine-tuning: the model directory the run starts from (its weights, config and tokenizer).</summary>
    public string? InitFrom { get; init; }

    /// <summary>Selective copy: the data tokens to remember and copy back.</summary>
    public int CopyTokens { get; init; } = 8;

    /// <summary>Selective copy and reversal: the task's vocabulary (selective copy's includes noise and separator).</summary>
    public int TaskVocab { get; init; } = 16;

    public int DModel { get; init; } = 64;

    public int NLayer { get; init; } = 2;

    public int DState { get; init; } = 16;

    public int HeadDim { get; init; } = 16;

    public int ChunkSize { get; init; } = 64;

    public int SeqLen { get; init; } = 64;

    public int Batch { get; init; } = 32;

    public long Steps { get; init; } = 1500;

    public float LearningRate { get; init; } = 3e-3f;

    public int WarmupSteps { get; init; } = 50;

    public float WeightDecay { get; init; } = 0.1f;

    public float MaxGradNorm { get; init; } = 1f;

    public bool Bidirectional { get; init; }

    public int Seed { get; init; }

    public int EvalEvery { get; init; } = 100;

    public int EvalBatches { get; init; } = 4;

    public int SaveEvery { get; init; } = 500;

    public int Keep { get; init; } = 2;

    /// <summary>
    /// What the products are computed in (fp32, fp32-fast, bf16): the run's, recorded when it starts, so a resumed run
    /// computes as it did; null (runs saved before it was recorded, or a config without it) means --precision or the
    /// device's default.
    /// </summary>
    public string? Precision { get; init; }

    /// <summary>With precision bf16: the layers' activations kept as bf16 tensors (--bf16-activations).</summary>
    public bool Bf16Activations { get; init; }

    /// <summary>The ranks (mpirun -np) of the run that wrote these settings: recorded, not an input.</summary>
    public int WorldSize { get; init; } = 1;

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };

    /// <summary>The defaults that make a bare `train --task T` learn T in minutes on the CPU driver.</summary>
    public static TrainSettings For(string task) => task switch
    {
        // 4 tokens among 27 noise positions: 99% eval accuracy by step 1,000-1,400 in most runs (H100 sweep, lavapipe), but
        // one lavapipe run with a 2,000-step schedule was at 90% at its end: 4,000 steps (7.6 minutes on 2 cores) for
        // margin. 8 tokens in 64 positions stayed under 30% after 3,000 steps at this size (docs/PERF.md).
        "selective-copy" => new() { Task = task, SeqLen = 32, CopyTokens = 4, TaskVocab = 10, ChunkSize = 32, Steps = 4000 },
        "associative-recall" => new() { Task = task, SeqLen = 32 },
        // Reversal needs every position located exactly; the sum-form bidirectional layer is mirror-symmetric but for the
        // conv, so it needs depth and state: this size reached 99.9% by step 1,200 on the H100 (vocabulary 16 and
        // 3,000 steps: 99.7% by 1,800; causal 53%); 2 layers of d_model 64 stayed near 30% (docs/PERF.md).
        "reverse" => new() { Task = task, SeqLen = 16, TaskVocab = 8, ChunkSize = 16, DModel = 128, HeadDim = 32, NLayer = 4, DState = 64, Steps = 1500, Bidirectional = true },
        "text" => new() { Task = task, SeqLen = 128, Batch = 16, Steps = 2000, DModel = 128, NLayer = 4, HeadDim = 32, ChunkSize = 128, LearningRate = 2e-3f },
        _ => throw new ArgumentException($"--task must be selective-copy, associative-recall, reverse or text, got '{task}'."),
    };

    public static TrainSettings FromJson(string path, TrainSettings defaults)
    {
        // Keys missing from the file keep the task's defaults: merge the file over the serialized defaults.
        var merged = System.Text.Json.Nodes.JsonNode.Parse(JsonSerializer.Serialize(defaults, Json))!.AsObject();
        try
        {
            var file = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path)) as System.Text.Json.Nodes.JsonObject
                ?? throw new InvalidDataException($"{path}: not a JSON object.");
            foreach (var (key, value) in file)
            {
                if (!merged.ContainsKey(key))
                {
                    throw new InvalidDataException($"{path}: unknown key '{key}' (known: {string.Join(", ", merged.Select(kv => kv.Key))}).");
                }

                merged[key] = value?.DeepClone();
            }

            return merged.Deserialize<TrainSettings>(Json) ?? throw new InvalidDataException($"{path}: null.");
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);   // a key given twice
        }
        catch (JsonException e)
        {
            // "The JSON value could not be converted to System.Int32. Path: $.steps": the key and the file say it.
            throw new InvalidDataException($"{path}: {(e.Path is { } at ? $"{at.TrimStart('$', '.')} has the wrong type or value" : "not valid JSON")} ({e.Message})", e);
        }
    }

    public string ToJson() => JsonSerializer.Serialize(this, Json);
}

#!/usr/bin/env bash
# Packs the libraries, then builds a fresh console project against the packages (not the source tree) and runs a
# small Mamba2 LM's training forward on the default device (lavapipe on a machine without a GPU): what a .NET user
# who adds the package gets. Exits non-zero if the loss of the untrained model is not about ln(vocabulary).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dotnet pack Mamba2.Vulkan.sln -c Release -o "$work/packages" >/dev/null
version=$(ls "$work/packages" | sed -n 's/^Mamba2\.Model\.\(.*\)\.nupkg$/\1/p')
mkdir "$work/app"
cd "$work/app"
dotnet new console --framework net10.0 >/dev/null
dotnet add package Mamba2.Model --version "$version" --source "$work/packages" >/dev/null
cat > Program.cs <<'CS'
using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

using var device = GpuDevice.Create();
var config = new Mamba2LMConfig(VocabSize: 32, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, ChunkSize = 16 });
using var lm = Mamba2LM.Initialize(device, config, new Random(1));
using var ids = IndexTensor.FromArray(device, "input_ids", [.. Enumerable.Range(0, 2 * 21).Select(i => i * 7 % 32)], 2, 21);
using var targets = Mamba2LM.NextTokenTargets(ids);
using var acts = lm.ForwardLoss(ids, targets);
var loss = acts.Loss!.Loss.ToArray()[0];
Console.WriteLine($"Mamba2.Model from its package on {device.Name}: loss {loss:F4} (ln 32 = {Math.Log(32):F4})");
return Math.Abs(loss - Math.Log(32)) < 0.5 ? 0 : 1;
CS
dotnet run -c Release

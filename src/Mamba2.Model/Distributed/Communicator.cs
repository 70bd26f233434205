namespace Mamba2.Model.Distributed;

/// <summary>
/// The ranks of a data-parallel job and the collectives training needs. <see cref="Launched"/> gives the job this
/// process was started in: MPI's under mpirun, else one process alone (nothing changes).
/// </summary>
public abstract class Communicator : IDisposable
{
    /// <summary>This process's rank, 0 to <see cref="Size"/> - 1.</summary>
    public abstract int Rank { get; }

    /// <summary>The number of ranks.</summary>
    public abstract int Size { get; }

    /// <summary>This rank's index among the ranks on its host (which device it takes by default).</summary>
    public abstract int LocalRank { get; }

    /// <summary>The number of ranks on this rank's host (1 where the launcher does not say).</summary>
    public abstract int LocalSize { get; }

    /// <summary>Whether this rank writes checkpoints, metrics and progress: rank 0.</summary>
    public bool IsRoot => Rank == 0;

    /// <summary>Every rank's <paramref name="values"/> summed element by element, into every rank's span, in one fixed order for a given size.</summary>
    public abstract void SumInPlace(Span<float> values);

    /// <inheritdoc cref="SumInPlace(Span{float})"/>
    public abstract void SumInPlace(Span<double> values);

    /// <summary>Returns when every rank has called it.</summary>
    public abstract void Barrier();

    /// <summary>Ends every rank of the job with <paramref name="exitCode"/> (after this rank's message is out).</summary>
    public abstract void Abort(int exitCode);

    public virtual void Dispose() => GC.SuppressFinalize(this);

    /// <summary>MPI's world when this process was started by mpirun (Open MPI sets OMPI_COMM_WORLD_SIZE), else <see cref="Alone"/>.</summary>
    public static Communicator Launched() =>
        Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE") is not null ? MpiCommunicator.World() : Alone;

    /// <summary>The MPI job this process has joined (until it is disposed), else null: for error paths that must end the whole job.</summary>
    public static Communicator? Joined => MpiCommunicator.Current;

    /// <summary>One process alone: rank 0 of 1, collectives that return at once.</summary>
    public static Communicator Alone { get; } = new SingleProcess();

    private sealed class SingleProcess : Communicator
    {
        public override int Rank => 0;

        public override int Size => 1;

        public override int LocalRank => 0;

        public override int LocalSize => 1;

        public override void SumInPlace(Span<float> values)
        {
        }

        public override void SumInPlace(Span<double> values)
        {
        }

        public override void Barrier()
        {
        }

        public override void Abort(int exitCode) => Environment.Exit(exitCode);

        public override void Dispose()
        {
        }
    }
}

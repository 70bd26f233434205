using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Silk.NET.Core;
using Silk.NET.Core.Native;
using Silk.NET.Vulkan;

namespace Mamba2.Vulkan;

/// <summary>
/// The Vulkan instance: loader, optional validation layers and the debug messenger feeding <see cref="ValidationLog"/>.
/// </summary>
public sealed unsafe class VulkanInstance : IDisposable
{
    private const string ValidationLayer = "VK_LAYER_KHRONOS_validation";
    private const string DebugUtils = "VK_EXT_debug_utils";
    private const string ValidationFeatures = "VK_EXT_validation_features";
    private const string PortabilityEnumeration = "VK_KHR_portability_enumeration";

    private readonly DebugUtilsMessengerEXT _messenger;
    private readonly GCHandle _logHandle;
    private readonly delegate* unmanaged<Instance, DebugUtilsMessengerEXT, AllocationCallbacks*, void> _destroyMessenger;
    private bool _disposed;

    public VulkanInstance(VulkanOptions options)
    {
        Options = options;
        Api = LoadApi();
        var validation = options.Validation || options.SynchronizationValidation;

        var availableLayers = EnumerateLayers(Api);
        if (validation && !availableLayers.ContainsKey(ValidationLayer))
        {
            throw new VulkanUnavailableException(
                $"Validation was requested but {ValidationLayer} is not installed. Install it with: sudo apt-get install vulkan-validationlayers");
        }

        ValidationLayerVersion = validation ? availableLayers[ValidationLayer] : 0;
        var availableExtensions = EnumerateInstanceExtensions(Api);
        var extensions = new List<string>();
        if (validation)
        {
            extensions.Add(DebugUtils);
        }

        var portability = availableExtensions.Contains(PortabilityEnumeration);
        if (portability)
        {
            extensions.Add(PortabilityEnumeration);
        }

        uint loaderVersion = Vk.Version10;
        Api.EnumerateInstanceVersion(ref loaderVersion);
        if (loaderVersion < Vk.Version12)
        {
            throw new VulkanUnavailableException(
                $"The Vulkan loader supports only {VersionString(loaderVersion)}; Vulkan 1.2 or newer is required (sudo apt-get install libvulkan1).");
        }

        ApiVersion = Math.Min(loaderVersion, Vk.Version13);
        if (validation)
        {
            _logHandle = GCHandle.Alloc(Log);
        }

        var appName = SilkMarshal.StringToPtr("mamba2-vulkan");
        var layerNames = validation ? SilkMarshal.StringArrayToPtr(new[] { ValidationLayer }) : 0;
        var extNames = SilkMarshal.StringArrayToPtr(extensions);
        try
        {
            var app = new ApplicationInfo
            {
                SType = StructureType.ApplicationInfo,
                PApplicationName = (byte*)appName,
                PEngineName = (byte*)appName,
                ApiVersion = ApiVersion,
            };
            var enabledFeatures = stackalloc ValidationFeatureEnableEXT[1] { ValidationFeatureEnableEXT.SynchronizationValidationExt };
            var features = new ValidationFeaturesEXT
            {
                SType = StructureType.ValidationFeaturesExt,
                EnabledValidationFeatureCount = 1,
                PEnabledValidationFeatures = enabledFeatures,
            };
            var messengerInfo = MessengerCreateInfo(validation ? (void*)GCHandle.ToIntPtr(_logHandle) : null);
            if (options.SynchronizationValidation)
            {
                messengerInfo.PNext = &features;
            }

            var info = new InstanceCreateInfo
            {
                SType = StructureType.InstanceCreateInfo,
                PApplicationInfo = &app,
                EnabledLayerCount = validation ? 1u : 0u,
                PpEnabledLayerNames = (byte**)layerNames,
                EnabledExtensionCount = (uint)extensions.Count,
                PpEnabledExtensionNames = (byte**)extNames,
                Flags = portability ? InstanceCreateFlags.EnumeratePortabilityBitKhr : 0,
                // Chaining the messenger info also catches messages from vkCreateInstance itself.
                PNext = validation ? &messengerInfo : null,
            };
            Api.CreateInstance(in info, null, out var instance).Check("vkCreateInstance");
            Handle = instance;
        }
        catch
        {
            if (_logHandle.IsAllocated)
            {
                _logHandle.Free();
            }

            Api.Dispose();
            throw;
        }
        finally
        {
            SilkMarshal.Free(appName);
            if (layerNames != 0)
            {
                SilkMarshal.Free(layerNames);
            }

            SilkMarshal.Free(extNames);
        }

        if (validation)
        {
            var create = (delegate* unmanaged<Instance, DebugUtilsMessengerCreateInfoEXT*, AllocationCallbacks*, DebugUtilsMessengerEXT*, Result>)
                GetProcAddress("vkCreateDebugUtilsMessengerEXT");
            _destroyMessenger = (delegate* unmanaged<Instance, DebugUtilsMessengerEXT, AllocationCallbacks*, void>)
                GetProcAddress("vkDestroyDebugUtilsMessengerEXT");
            var info = MessengerCreateInfo((void*)GCHandle.ToIntPtr(_logHandle));
            DebugUtilsMessengerEXT messenger;
            create(Handle, &info, null, &messenger).Check("vkCreateDebugUtilsMessengerEXT");
            _messenger = messenger;
        }
    }

    public Vk Api { get; }

    public Instance Handle { get; }

    public uint ApiVersion { get; }

    public VulkanOptions Options { get; }

    /// <summary>Validation messages; always empty when validation is off.</summary>
    public ValidationLog Log { get; } = new();

    public bool ValidationEnabled => _logHandle.IsAllocated;

    /// <summary>The Vulkan header version the validation layer was built against (0 without validation).</summary>
    public uint ValidationLayerVersion { get; }

    // Header versions that introduced extensions the runtime enables. A validation layer older than that does
    // not know their structures and reports every use as an error, so under such a layer they stay off.
    private static readonly Dictionary<string, uint> IntroducedIn = new()
    {
        ["VK_KHR_cooperative_matrix"] = Vk.MakeVersion(1, 3, 255),
        ["VK_NV_cooperative_matrix2"] = Vk.MakeVersion(1, 3, 301),
        ["VK_KHR_shader_bfloat16"] = Vk.MakeVersion(1, 4, 311),
    };

    /// <summary>False for a device extension that the enabled validation layer is too old to understand.</summary>
    public bool LayerUnderstands(string extension) =>
        !ValidationEnabled || !IntroducedIn.TryGetValue(extension, out var since) || ValidationLayerVersion >= since;

    /// <summary>Looks up an instance-level function (extension entry points Silk.NET does not bind).</summary>
    public nint GetProcAddress(string name)
    {
        var fn = (nint)Api.GetInstanceProcAddr(Handle, name).Handle;
        if (fn == 0)
        {
            throw new MissingFeatureException($"{name} is not exported by the Vulkan loader or driver.");
        }

        return fn;
    }

    public IReadOnlyList<PhysicalDevice> EnumeratePhysicalDevices()
    {
        uint count = 0;
        Api.EnumeratePhysicalDevices(Handle, ref count, null).Check("vkEnumeratePhysicalDevices");
        var devices = new PhysicalDevice[count];
        fixed (PhysicalDevice* p = devices)
        {
            Api.EnumeratePhysicalDevices(Handle, ref count, p).Check("vkEnumeratePhysicalDevices");
        }

        return devices;
    }

    public static string VersionString(uint v) => $"{v >> 22}.{(v >> 12) & 0x3ff}.{v & 0xfff}";

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_messenger.Handle != 0)
        {
            _destroyMessenger(Handle, _messenger, null);
        }

        Api.DestroyInstance(Handle, null);
        if (_logHandle.IsAllocated)
        {
            _logHandle.Free();
        }

        Api.Dispose();
    }

    private static Vk LoadApi()
    {
        try
        {
            return Vk.GetApi();
        }
        catch (Exception e) when (e is FileNotFoundException or DllNotFoundException or TypeInitializationException)
        {
            throw new VulkanUnavailableException(
                "The Vulkan loader (libvulkan.so.1) was not found. Install it and a driver: sudo apt-get install libvulkan1 mesa-vulkan-drivers", e);
        }
    }

    private static Dictionary<string, uint> EnumerateLayers(Vk api)
    {
        uint count = 0;
        api.EnumerateInstanceLayerProperties(ref count, null).Check("vkEnumerateInstanceLayerProperties");
        var props = new LayerProperties[count];
        fixed (LayerProperties* p = props)
        {
            api.EnumerateInstanceLayerProperties(ref count, p).Check("vkEnumerateInstanceLayerProperties");
        }

        var layers = new Dictionary<string, uint>();
        for (var i = 0; i < count; i++)
        {
            fixed (byte* name = props[i].LayerName)
            {
                layers[SilkMarshal.PtrToString((nint)name)!] = props[i].SpecVersion;
            }
        }

        return layers;
    }

    private static HashSet<string> EnumerateInstanceExtensions(Vk api)
    {
        uint count = 0;
        api.EnumerateInstanceExtensionProperties((byte*)null, ref count, null).Check("vkEnumerateInstanceExtensionProperties");
        var props = new ExtensionProperties[count];
        fixed (ExtensionProperties* p = props)
        {
            api.EnumerateInstanceExtensionProperties((byte*)null, ref count, p).Check("vkEnumerateInstanceExtensionProperties");
        }

        var set = new HashSet<string>();
        for (var i = 0; i < count; i++)
        {
            fixed (byte* name = props[i].ExtensionName)
            {
                set.Add(SilkMarshal.PtrToString((nint)name)!);
            }
        }

        return set;
    }

    private static DebugUtilsMessengerCreateInfoEXT MessengerCreateInfo(void* userData) => new()
    {
        SType = StructureType.DebugUtilsMessengerCreateInfoExt,
        MessageSeverity = DebugUtilsMessageSeverityFlagsEXT.WarningBitExt | DebugUtilsMessageSeverityFlagsEXT.ErrorBitExt,
        MessageType = DebugUtilsMessageTypeFlagsEXT.GeneralBitExt | DebugUtilsMessageTypeFlagsEXT.ValidationBitExt |
                      DebugUtilsMessageTypeFlagsEXT.PerformanceBitExt,
        PfnUserCallback = new PfnDebugUtilsMessengerCallbackEXT(&OnMessage),
        PUserData = userData,
    };

    // Silk.NET resolves entry points through vkGetDeviceProcAddr once a device exists, instance-level ones
    // included; layers from 1.4.3xx warn about each such lookup. The runtime's own lookups use the right call.
    private const string SilkLoaderProbe = "WARNING-vkGetDeviceProcAddr-device";

    [UnmanagedCallersOnly(CallConvs = new[] { typeof(CallConvCdecl) })]
    private static Bool32 OnMessage(DebugUtilsMessageSeverityFlagsEXT severity, DebugUtilsMessageTypeFlagsEXT type,
        DebugUtilsMessengerCallbackDataEXT* data, void* userData)
    {
        var log = (ValidationLog)GCHandle.FromIntPtr((nint)userData).Target!;
        var id = SilkMarshal.PtrToString((nint)data->PMessageIdName);
        if (id == SilkLoaderProbe)
        {
            return false;
        }

        var sev = severity.HasFlag(DebugUtilsMessageSeverityFlagsEXT.ErrorBitExt) ? "error" : "warning";
        var kind = type.HasFlag(DebugUtilsMessageTypeFlagsEXT.ValidationBitExt) ? "validation"
            : type.HasFlag(DebugUtilsMessageTypeFlagsEXT.PerformanceBitExt) ? "performance" : "general";
        log.Add(new ValidationMessage(sev, kind, id,
            SilkMarshal.PtrToString((nint)data->PMessage) ?? ""));
        return false;
    }
}

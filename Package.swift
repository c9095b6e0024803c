// swift-tools-version: 6.0
import PackageDescription

// Linux only: the transport is built on epoll, eventfd and Linux socket options, so no Apple platform
// is declared. Building needs Swift 6 and Debian's libxxhash-dev; the RDMA backend is compiled in when
// libibverbs-dev and librdmacm-dev are installed too, and left out (reporting itself unavailable) when not.
let package = Package(
    name: "Chorus",
    products: [
        .library(name: "Chorus", targets: ["Chorus"]),
        // The C ABI (CModules/CChorus/include/chorus.h): libchorus.so for C, C++, Rust and Python.
        .library(name: "chorus", type: .dynamic, targets: ["ChorusC"]),
        .executable(name: "chorus-master", targets: ["chorus-master"]),
        .executable(name: "chorus-bench", targets: ["chorus-bench"]),
        .executable(name: "chorus-demo", targets: ["chorus-demo"]),
        .executable(name: "chorus-stress", targets: ["chorus-stress"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // HMAC-SHA256 and HKDF for the shared-secret handshake (BoringSSL vendored: no system package).
        .package(url: "https://github.com/apple/swift-crypto", "3.12.0" ..< "5.0.0"),
        // API documentation: `swift package generate-documentation --target Chorus`.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        // C layer: sockets, epoll, framing (CChorusTransport) and reduction kernels (CChorusKernels).
        .target(name: "CChorusTransport", path: "CModules/CChorusTransport"),
        .target(name: "CChorusKernels", path: "CModules/CChorusKernels"),
        // Debian's libxxhash (apt: libxxhash-dev), for shared-state hashes.
        .systemLibrary(name: "CXXHash", path: "CModules/CXXHash", pkgConfig: "libxxhash", providers: [.apt(["libxxhash-dev"])]),

        // Swift layers, lowest first. DESIGN.md lists which may import which.
        .target(name: "ChorusTransport", dependencies: ["CChorusTransport"]),
        .target(name: "ChorusProtocol", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "ChorusAlgorithms", dependencies: ["CChorusKernels"], linkerSettings: [.linkedLibrary("m")]),
        .target(name: "Chorus", dependencies: [
            "ChorusTransport", "ChorusProtocol", "ChorusAlgorithms", "CXXHash", .product(name: "Logging", package: "swift-log"),
        ]),
        // The C ABI: chorus.h (with the status names, in C) and its implementation over the Swift API.
        .target(name: "CChorus", path: "CModules/CChorus"),
        .target(name: "ChorusC", dependencies: ["Chorus", "CChorus"]),
        // Starts and signals local peer processes, for the demo, the bench and the tests; binds them
        // to CPUs through CChorusLauncher.
        .target(name: "CChorusLauncher", path: "CModules/CChorusLauncher"),
        .target(name: "ChorusLauncher", dependencies: ["Chorus", "CChorusLauncher"]),

        // Executables.
        .executableTarget(name: "chorus-master", dependencies: [
            "Chorus", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "chorus-stress", dependencies: [
            "Chorus", "ChorusLauncher", "ChorusProtocol", "ChorusTransport", "CChorusTransport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "chorus-bench", dependencies: [
            "Chorus", "ChorusLauncher", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Benchmarks/chorus-bench"),
        .executableTarget(name: "chorus-scale", dependencies: [
            "Chorus", "ChorusLauncher", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Benchmarks/chorus-scale"),
        .target(name: "KernelBaseline", path: "Benchmarks/CKernelBaseline"),
        .executableTarget(name: "chorus-kernel-bench", dependencies: ["ChorusAlgorithms", "KernelBaseline"],
                          path: "Benchmarks/chorus-kernel-bench"),
        .executableTarget(name: "chorus-linear-attention", dependencies: [
            "Chorus", "ChorusLauncher", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Examples/linear-attention", exclude: ["README.md"]),
        .executableTarget(name: "chorus-diloco", dependencies: [
            "Chorus", "ChorusLauncher", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Examples/diloco", exclude: ["README.md"]),
        .executableTarget(name: "chorus-demo", dependencies: [
            "Chorus", "ChorusLauncher", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Examples/chorus-demo", exclude: ["README.md"]),

        // Tests. chorus-test-peer is the peer process that integration tests start and kill.
        .executableTarget(name: "chorus-test-peer", dependencies: ["Chorus", "ChorusLauncher", "ChorusTestSupport"], path: "Tests/chorus-test-peer"),
        .target(name: "ChorusTestSupport", dependencies: ["ChorusAlgorithms"], path: "Tests/ChorusTestSupport"),
        .testTarget(name: "ChorusTransportTests", dependencies: ["ChorusTransport"]),
        .testTarget(name: "ChorusProtocolTests", dependencies: ["ChorusProtocol"]),
        .testTarget(name: "ChorusAlgorithmsTests", dependencies: ["ChorusAlgorithms", "ChorusTestSupport"]),
        .testTarget(name: "ChorusTests", dependencies: [
            "Chorus", "ChorusLauncher", "ChorusTestSupport", "ChorusTransport", "ChorusProtocol", "chorus-test-peer", "chorus-master", "chorus-bench", "chorus-demo", "chorus-stress", "chorus-linear-attention",
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)

import ChorusAlgorithms
import ChorusProtocol

/// Collective kinds, as reported to the master in each operation's descriptor.
enum Collective: UInt8, CustomStringConvertible {
    case allReduce = 1, reduceScatter = 2, allGather = 3, broadcast = 4, barrier = 5, allScan = 6
    case synchronize = 7, measureLinks = 8

    var description: String {
        switch self {
        case .allReduce: "allReduce"
        case .reduceScatter: "reduceScatter"
        case .allGather: "allGather"
        case .broadcast: "broadcast"
        case .barrier: "barrier"
        case .allScan: "allScan"
        case .synchronize: "synchronize"
        case .measureLinks: "optimizeTopology"
        }
    }
}

extension OperationDescriptor {
    /// The descriptor's fields as the API names them, for the master's mismatch messages: the
    /// collective, then only the arguments that collective has (`detail` unpacked per collective).
    static let apiNames: DescriptorNaming = { d in
        guard let collective = Collective(rawValue: d.collective) else { return numericFields(d) }
        let dataType = DataType(rawValue: d.dataType).map(String.init(describing:)) ?? "\(d.dataType)"
        let reduceOp = ReduceOp(rawValue: d.reduceOp).map(String.init(describing:)) ?? "\(d.reduceOp)"
        let head: DescriptorField = ("collective", collective.description)
        switch collective {
        case .allReduce:
            let algorithm = AllReduceAlgorithm.allCases.first { $0.wireValue == d.detail }?.rawValue
                ?? Quantization(quantizedDetail: d.detail).map { "quantized(\($0))" } ?? "\(d.detail)"
            return [head, ("count", "\(d.count)"), ("dataType", dataType), ("op", reduceOp), ("algorithm", algorithm)]
        case .reduceScatter:
            return [head, ("count", "\(d.count)"), ("dataType", dataType), ("op", reduceOp)]
        case .allGather:
            return [head, ("count", "\(d.count)"), ("dataType", dataType)]
        case .broadcast:
            return [head, ("bytes", "\(d.count)"), ("root", "\(d.detail)")]
        case .barrier:
            return [head]
        case .allScan:
            let scanOp = ScanOperator(rawValue: d.reduceOp).map(String.init(describing:)) ?? "\(d.reduceOp)"
            let blocks = (d.detail >> 1) & 0x7FFF_FFFF
            return [head, ("count", "\(d.count)"), ("dataType", dataType), ("op", scanOp),
                    ("decayCount", "\(d.detail >> 32)"), ("reverse", d.detail & 1 == 1 ? "true" : "false"),
                    ("algorithm", blocks == 0 ? "recursiveDoubling" : "chain(blocks \(blocks))")]
        case .synchronize:
            return [head, ("tensors", "\(d.count)")]
        case .measureLinks:
            let measurement = LinkMeasurementSettings(detail: d.detail)
            return [head, ("measuring", "\(measurement.phaseTarget) per phase"), ("remeasure", "\(measurement.remeasure)")]
        }
    }
}

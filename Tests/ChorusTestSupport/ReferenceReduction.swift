/// Scalar reference semantics for every dtype and op, written independently of the C kernels, and
/// the sequential fold a ring all-reduce must reproduce bit for bit.
import ChorusAlgorithms

public enum ReferenceReduction {
    /// IEEE 754-2019 maximum/minimum: a NaN operand wins (the first's when both), -0 < +0.
    public static func maximum(_ x: Float, _ y: Float) -> Float {
        if x.isNaN { return x }
        if y.isNaN { return y }
        if x == y { return Float(bitPattern: x.bitPattern & y.bitPattern) }
        return x > y ? x : y
    }
    public static func minimum(_ x: Float, _ y: Float) -> Float {
        if x.isNaN { return x }
        if y.isNaN { return y }
        if x == y { return Float(bitPattern: x.bitPattern | y.bitPattern) }
        return x < y ? x : y
    }
    public static func maximum(_ x: Double, _ y: Double) -> Double {
        if x.isNaN { return x }
        if y.isNaN { return y }
        if x == y { return Double(bitPattern: x.bitPattern & y.bitPattern) }
        return x > y ? x : y
    }
    public static func minimum(_ x: Double, _ y: Double) -> Double {
        if x.isNaN { return x }
        if y.isNaN { return y }
        if x == y { return Double(bitPattern: x.bitPattern | y.bitPattern) }
        return x < y ? x : y
    }

    public static func bf16ToFloat(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }
    public static func floatToBF16(_ f: Float) -> UInt16 {
        if f.isNaN { return UInt16(f.bitPattern >> 16) | 0x40 }
        let bits = f.bitPattern
        let lsb = (bits >> 16) & 1
        return UInt16((UInt64(bits) + 0x7FFF + UInt64(lsb)) >> 16)
    }

    private static func floatOp(_ op: ReduceOp, _ x: Float, _ y: Float) -> Float {
        switch op {
        case .sum, .avg: x + y
        case .prod: x * y
        case .min: minimum(x, y)
        case .max: maximum(x, y)
        }
    }

    /// `a op b` on one element's bytes (little-endian, `dataType.size` bytes each).
    public static func combine(_ op: ReduceOp, _ dataType: DataType, _ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
        switch dataType {
        case .float32:
            return bytes(floatOp(op, load(a, Float.self), load(b, Float.self)))
        case .float64:
            let x = load(a, Double.self), y = load(b, Double.self)
            let r: Double = switch op {
            case .sum, .avg: x + y
            case .prod: x * y
            case .min: minimum(x, y)
            case .max: maximum(x, y)
            }
            return bytes(r)
        case .float16:
            let r = floatOp(op, Float(Float16(bitPattern: load(a, UInt16.self))), Float(Float16(bitPattern: load(b, UInt16.self))))
            return bytes(Float16(r).bitPattern)
        case .bfloat16:
            return bytes(floatToBF16(floatOp(op, bf16ToFloat(load(a, UInt16.self)), bf16ToFloat(load(b, UInt16.self)))))
        case .int32: return bytes(integerOp(op, load(a, Int32.self), load(b, Int32.self)))
        case .int64: return bytes(integerOp(op, load(a, Int64.self), load(b, Int64.self)))
        case .uint8: return bytes(integerOp(op, load(a, UInt8.self), load(b, UInt8.self)))
        }
    }

    private static func integerOp<T: FixedWidthInteger>(_ op: ReduceOp, _ x: T, _ y: T) -> T {
        switch op {
        case .sum, .avg: x &+ y
        case .prod: x &* y
        case .min: Swift.min(x, y)
        case .max: Swift.max(x, y)
        }
    }

    /// Finishes an average of `worldSize` contributions.
    public static func divide(_ dataType: DataType, _ a: [UInt8], by n: Int) -> [UInt8] {
        switch dataType {
        case .float32: bytes(load(a, Float.self) / Float(n))
        case .float64: bytes(load(a, Double.self) / Double(n))
        case .float16: bytes(Float16(Float(Float16(bitPattern: load(a, UInt16.self))) / Float(n)).bitPattern)
        case .bfloat16: bytes(floatToBF16(bf16ToFloat(load(a, UInt16.self)) / Float(n)))
        case .int32: bytes(Int32(Int64(load(a, Int32.self)) / Int64(n)))
        case .int64: bytes(load(a, Int64.self) / Int64(n))
        case .uint8: bytes(load(a, UInt8.self) / UInt8(n))
        }
    }

    /// What a ring all-reduce over `inputs` (one byte array per rank, in rank order) must produce:
    /// element i of chunk c is folded c, c+1, ..., c-1 (mod n), then divided for avg.
    public static func ringAllReduce(_ inputs: [[UInt8]], count: Int, dataType: DataType, op: ReduceOp) -> [UInt8] {
        ringFold(inputs, count: count, dataType: dataType, op: op, firstRank: { $0 })
    }

    /// What a ring reduce-scatter must produce, all blocks: block b is folded b+1, b+2, ..., b.
    public static func ringReduceScatter(_ inputs: [[UInt8]], count: Int, dataType: DataType, op: ReduceOp) -> [UInt8] {
        ringFold(inputs, count: count, dataType: dataType, op: op, firstRank: { $0 + 1 })
    }

    private static func ringFold(_ inputs: [[UInt8]], count: Int, dataType: DataType, op: ReduceOp,
                                 firstRank: (Int) -> Int) -> [UInt8] {
        let n = inputs.count, size = dataType.size
        guard n > 1 else { return inputs[0] }
        let chunks = Partition(count: count, parts: n)
        var output = [UInt8](repeating: 0, count: count * size)
        for c in 0 ..< n {
            let first = firstRank(c) % n
            for i in chunks.start(of: c) ..< chunks.start(of: c) + chunks.length(of: c) {
                let element = i * size ..< (i + 1) * size
                var acc = Array(inputs[first][element])
                for j in 1 ..< n { acc = combine(op, dataType, acc, Array(inputs[(first + j) % n][element])) }
                if op == .avg { acc = divide(dataType, acc, by: n) }
                output.replaceSubrange(element, with: acc)
            }
        }
        return output
    }

    /// What recursive doubling must produce: extras fold into rank r-p first, then each round
    /// combines (lower rank's partial, upper rank's partial).
    public static func recursiveDoublingAllReduce(_ inputs: [[UInt8]], count: Int, dataType: DataType, op: ReduceOp) -> [UInt8] {
        let n = inputs.count, size = dataType.size
        var p = 1
        while p * 2 <= n { p *= 2 }
        func fold(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
            (0 ..< count).flatMap { i in combine(op, dataType, Array(a[i * size ..< (i + 1) * size]), Array(b[i * size ..< (i + 1) * size])) }
        }
        var partial = (0 ..< p).map { r in r + p < n ? fold(inputs[r], inputs[r + p]) : inputs[r] }
        var distance = 1
        while distance < p {
            partial = (0 ..< p).map { r in
                let partner = r ^ distance
                return r < partner ? fold(partial[r], partial[partner]) : fold(partial[partner], partial[r])
            }
            distance *= 2
        }
        guard op == .avg else { return partial[0] }
        return (0 ..< count).flatMap { i in divide(dataType, Array(partial[0][i * size ..< (i + 1) * size]), by: n) }
    }

    public static func load<T>(_ bytes: [UInt8], _: T.Type) -> T {
        bytes.withUnsafeBytes { $0.loadUnaligned(as: T.self) }
    }
    public static func bytes<T>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value) { Array($0) }
    }
}

/// The sequential left fold an All-Scan must reproduce bit for bit.
public enum ReferenceScan {
    /// The identity of a scan operator, written here apart from the code under test
    /// (`ScanOperator.fillIdentity`): 0 for sum and affine (whose identity is the pair (1, 0): decay
    /// 1, state 0), 1 for prod, -inf (the smallest integer) for max, +inf (the largest) for min.
    public static func scanIdentity(_ op: ScanOperator, _ dataType: DataType, count: Int) -> [UInt8] {
        let element: [UInt8]
        switch (op, dataType) {
        case (.sum, _), (.affine, _): element = [UInt8](repeating: 0, count: dataType.size)
        case (.prod, .int32): element = ReferenceReduction.bytes(Int32(1))
        case (.prod, .int64): element = ReferenceReduction.bytes(Int64(1))
        case (.prod, .uint8): element = [1]
        case (.prod, _): element = floatBytes(1, dataType)
        case (.max, .int32): element = ReferenceReduction.bytes(Int32(-2_147_483_648))
        case (.max, .int64): element = ReferenceReduction.bytes(Int64(-9_223_372_036_854_775_807 - 1))
        case (.max, .uint8): element = [0]
        case (.max, _): element = floatBytes(-.infinity, dataType)
        case (.min, .int32): element = ReferenceReduction.bytes(Int32(2_147_483_647))
        case (.min, .int64): element = ReferenceReduction.bytes(Int64(9_223_372_036_854_775_807))
        case (.min, .uint8): element = [255]
        case (.min, _): element = floatBytes(.infinity, dataType)
        }
        return Array((0 ..< count).map { _ in element }.joined())
    }

    /// A float value in a float dtype's bytes (bf16 by truncating f32, exact for 1 and ±inf).
    static func floatBytes(_ value: Float, _ dataType: DataType) -> [UInt8] {
        switch dataType {
        case .float32: ReferenceReduction.bytes(value)
        case .float64: ReferenceReduction.bytes(Double(value))
        case .float16: ReferenceReduction.bytes(Float16(value).bitPattern)
        case .bfloat16: ReferenceReduction.bytes(UInt16(value.bitPattern >> 16))
        default: fatalError("not a float type")
        }
    }

    /// Per rank: (exclusive, inclusive).
    public static func scan(states: [[UInt8]], decays: [[UInt8]], count: Int, decayCount: Int, dataType: DataType,
                            op: ScanOperator, reverse: Bool) -> [(exclusive: [UInt8], inclusive: [UInt8])] {
        let n = states.count, size = dataType.size
        let identity = scanIdentity(op, dataType, count: count)
        var results = [(exclusive: [UInt8], inclusive: [UInt8])](repeating: ([], []), count: n)
        var carried = identity
        for q in 0 ..< n {
            let rank = reverse ? n - 1 - q : q
            let state = states[rank]
            var inclusive = state
            if q > 0 {
                inclusive = (0 ..< count).flatMap { i -> [UInt8] in
                    let x = Array(carried[i * size ..< (i + 1) * size]), s = Array(state[i * size ..< (i + 1) * size])
                    if op == .affine {
                        let gIndex = i / (count / decayCount)
                        return affine(dataType, Array(decays[rank][gIndex * size ..< (gIndex + 1) * size]), x, s)
                    }
                    let reduceOp: ReduceOp = switch op {
                    case .sum: .sum
                    case .prod: .prod
                    case .max: .max
                    default: .min
                    }
                    return ReferenceReduction.combine(reduceOp, dataType, x, s)
                }
            }
            results[rank] = (q == 0 ? identity : carried, inclusive)
            carried = inclusive
        }
        return results
    }

    /// What the recursive-doubling scan must produce: rounds d = 1, 2, 4, ... fold the window d
    /// positions back into both the window and the exclusive part (see RecursiveDoublingScan).
    public static func recursiveDoublingScan(states: [[UInt8]], decays: [[UInt8]], count: Int, decayCount: Int,
                                             dataType: DataType, op: ScanOperator, reverse: Bool)
        -> [(exclusive: [UInt8], inclusive: [UInt8])] {
        let n = states.count, size = dataType.size, affineOp = op == .affine
        let stride = affineOp ? count / decayCount : 1
        func filled(_ o: ScanOperator, _ elements: Int) -> [UInt8] { scanIdentity(o, dataType, count: elements) }
        func element(_ b: [UInt8], _ i: Int) -> [UInt8] { Array(b[i * size ..< (i + 1) * size]) }
        func step(_ a: [UInt8], _ x: [UInt8], _ s: [UInt8]) -> [UInt8] {
            (0 ..< count).flatMap { i in affine(dataType, element(a, i / stride), element(x, i), element(s, i)) }
        }
        func combine(_ o: ReduceOp, _ x: [UInt8], _ y: [UInt8], _ elements: Int) -> [UInt8] {
            (0 ..< elements).flatMap { i in ReferenceReduction.combine(o, dataType, element(x, i), element(y, i)) }
        }
        let reduceOp: ReduceOp = switch op {
        case .sum: .sum
        case .prod, .affine: .prod
        case .max: .max
        case .min: .min
        }
        func rank(_ q: Int) -> Int { reverse ? n - 1 - q : q }
        var window = (0 ..< n).map { q in (a: affineOp ? decays[rank(q)] : [], b: states[rank(q)]) }
        var exclusive = (0 ..< n).map { _ in (a: affineOp ? filled(.prod, decayCount) : [], b: filled(op, count)) }
        var d = 1
        while d < n {
            let before = window
            for q in d ..< n {
                let received = before[q - d]
                if affineOp {
                    exclusive[q] = (combine(.prod, exclusive[q].a, received.a, decayCount), step(exclusive[q].a, received.b, exclusive[q].b))
                    window[q] = (combine(.prod, window[q].a, received.a, decayCount), step(window[q].a, received.b, window[q].b))
                } else {
                    exclusive[q].b = combine(reduceOp, received.b, exclusive[q].b, count)
                    window[q].b = combine(reduceOp, received.b, window[q].b, count)
                }
            }
            d *= 2
        }
        var results = [(exclusive: [UInt8], inclusive: [UInt8])](repeating: ([], []), count: n)
        for q in 0 ..< n { results[rank(q)] = (exclusive[q].b, window[q].b) }
        return results
    }

    /// g*x + s, widened to f32 for 16-bit floats, rounded once, no fused multiply-add.
    static func affine(_ dataType: DataType, _ g: [UInt8], _ x: [UInt8], _ s: [UInt8]) -> [UInt8] {
        typealias R = ReferenceReduction
        switch dataType {
        case .float32:
            let product = R.load(g, Float.self) * R.load(x, Float.self)
            return R.bytes(product + R.load(s, Float.self))
        case .float64:
            let product = R.load(g, Double.self) * R.load(x, Double.self)
            return R.bytes(product + R.load(s, Double.self))
        case .float16:
            let f = { (b: [UInt8]) in Float(Float16(bitPattern: R.load(b, UInt16.self))) }
            let product = f(g) * f(x)
            return R.bytes(Float16(product + f(s)).bitPattern)
        case .bfloat16:
            let f = { (b: [UInt8]) in R.bf16ToFloat(R.load(b, UInt16.self)) }
            let product = f(g) * f(x)
            return R.bytes(R.floatToBF16(product + f(s)))
        default:
            fatalError("affine needs a float dtype")
        }
    }
}

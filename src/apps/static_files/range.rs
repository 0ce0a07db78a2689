//! `Range: bytes=...` (RFC 9110 §14).

use std::ops::Range;

/// Most ranges honoured in one request; more and the field is ignored
/// (a defence against many tiny or overlapping ranges).
const MAX_RANGES: usize = 64;

/// What a `Range` field asks of a representation of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    /// Absent, malformed, another unit, or too many ranges: serve the whole representation.
    Whole,
    /// These satisfiable byte ranges, in the order asked (overlaps merged).
    Ranges(Vec<Range<u64>>),
    /// Well-formed, but no range overlaps the representation: 416.
    Unsatisfiable,
}

/// Parses a `Range` field value for a representation of `len` bytes.
pub(crate) fn parse(value: &str, len: u64) -> RangeRequest {
    // The unit is case-insensitive (RFC 9110 §14.1).
    let value = value.trim();
    let Some(spec) = value.get(..6).filter(|unit| unit.eq_ignore_ascii_case("bytes=")).map(|_| &value[6..]) else {
        return RangeRequest::Whole;
    };
    let mut ranges: Vec<Range<u64>> = Vec::new();
    let mut count = 0;
    for part in spec.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        count += 1;
        if count > MAX_RANGES {
            return RangeRequest::Whole;
        }
        let Some((first, last)) = part.split_once('-') else {
            return RangeRequest::Whole;
        };
        let (first, last) = (first.trim(), last.trim());
        let range = if first.is_empty() {
            // Suffix: the last N bytes.
            let Some(n) = number(last) else { return RangeRequest::Whole };
            if n == 0 {
                continue;
            }
            len.saturating_sub(n)..len
        } else {
            let Some(start) = number(first) else { return RangeRequest::Whole };
            let end = if last.is_empty() {
                len
            } else {
                let Some(last) = number(last) else { return RangeRequest::Whole };
                if last < start {
                    return RangeRequest::Whole;
                }
                last.saturating_add(1).min(len)
            };
            if start >= len {
                continue;
            }
            start..end
        };
        if range.start < range.end {
            ranges.push(range);
        }
    }
    if count == 0 {
        return RangeRequest::Whole;
    }
    if ranges.is_empty() {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Ranges(merge_overlaps(ranges))
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Keeps the order asked unless ranges overlap; then they are sorted and merged
/// (RFC 9110 §14.2 lets a server coalesce overlapping ranges).
fn merge_overlaps(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    let overlapping =
        ranges.iter().enumerate().any(|(i, a)| ranges[i + 1..].iter().any(|b| a.start < b.end && b.start < a.end));
    if !overlapping {
        return ranges;
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(v: &[(u64, u64)]) -> RangeRequest {
        RangeRequest::Ranges(v.iter().map(|&(a, b)| a..b).collect())
    }

    #[test]
    fn single_open_suffix_and_clamped() {
        assert_eq!(parse("bytes=0-9", 100), ranges(&[(0, 10)]));
        assert_eq!(parse("bytes=10-", 100), ranges(&[(10, 100)]));
        assert_eq!(parse("bytes=-5", 100), ranges(&[(95, 100)]));
        assert_eq!(parse("bytes=-500", 100), ranges(&[(0, 100)]));
        assert_eq!(parse("bytes=0-999999", 100), ranges(&[(0, 100)]));
        assert_eq!(parse("bytes=99-99", 100), ranges(&[(99, 100)]));
        assert_eq!(parse("Bytes=0-0", 100), ranges(&[(0, 1)]));
    }

    #[test]
    fn several_ranges_keep_order_or_merge() {
        assert_eq!(parse("bytes=0-0, 10-19,-3", 100), ranges(&[(0, 1), (10, 20), (97, 100)]));
        assert_eq!(parse("bytes=50-59,0-9", 100), ranges(&[(50, 60), (0, 10)]));
        assert_eq!(parse("bytes=0-10,5-20,90-", 100), ranges(&[(0, 21), (90, 100)]));
        // Unsatisfiable members are dropped when another one is satisfiable.
        assert_eq!(parse("bytes=0-1,500-600", 100), ranges(&[(0, 2)]));
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(parse("bytes=1000-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse("bytes=100-200", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn malformed_is_ignored() {
        for v in ["bytes=abc", "items=0-1", "bytes=5-1", "bytes=1", "bytes=", "bytes=--1", "bytes=+1-2", "bytes=1-2-3"]
        {
            assert_eq!(parse(v, 100), RangeRequest::Whole, "{v}");
        }
        let many = format!("bytes={}", (0..65).map(|i| format!("{i}-{i}")).collect::<Vec<_>>().join(","));
        assert_eq!(parse(&many, 1000), RangeRequest::Whole);
    }
}

//! The search loop of the server stores (Chroma, Qdrant), whose servers filter by a superset of a [`Filter`]
//! that [`Filter::matches`] then narrows exactly.
//!
//! [`Filter`]: catena_core::Filter
//! [`Filter::matches`]: catena_core::Filter::matches

use std::future::Future;

use catena_core::{Result, ScoredDocument};

/// Asks the server for `k` candidates (`fetch(n)` returns those that pass the exact filter and the minimum score,
/// and how many the server returned); when some were dropped and the server had more, asks again for four times as
/// many, up to every candidate. The candidates are counted (`count`) only then, so an unfiltered search is one
/// round trip. Returns the best `k`, best first.
pub(crate) async fn exact_search<Q, QF, C, CF>(k: usize, mut fetch: Q, count: C) -> Result<Vec<ScoredDocument>>
where
    Q: FnMut(usize) -> QF,
    QF: Future<Output = Result<(Vec<ScoredDocument>, usize)>>,
    C: FnOnce() -> CF,
    CF: Future<Output = Result<usize>>,
{
    if k == 0 {
        return Ok(Vec::new());
    }
    let mut n = k;
    let mut count = Some(count);
    let mut total = usize::MAX;
    loop {
        let (mut hits, returned) = fetch(n).await?;
        let enough = hits.len() >= k || returned < n;
        if !enough {
            if let Some(count) = count.take() {
                total = count().await?;
            }
        }
        if enough || n >= total {
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
            hits.truncate(k);
            return Ok(hits);
        }
        n = n.saturating_mul(4).min(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use catena_core::{Document, Metadata};
    use std::cell::Cell;

    /// A server of `total` candidates scored 1/i, of which the exact filter keeps every `keep`-th.
    fn run(k: usize, total: usize, keep: usize) -> (Vec<String>, Vec<usize>, usize) {
        let asked = std::cell::RefCell::new(Vec::new());
        let counted = Cell::new(0);
        let hits = futures::executor::block_on(exact_search(
            k,
            |n| {
                asked.borrow_mut().push(n);
                let returned = n.min(total);
                let hits = (0..returned)
                    .filter(|i| i % keep == 0)
                    .map(|i| ScoredDocument {
                        document: Document::with_id(i.to_string(), "", Metadata::new()),
                        score: 1.0 / (i + 1) as f32,
                        vector: None,
                    })
                    .collect();
                async move { Ok((hits, returned)) }
            },
            || {
                counted.set(counted.get() + 1);
                async move { Ok(total) }
            },
        ))
        .unwrap();
        (hits.into_iter().map(|h| h.document.id).collect(), asked.into_inner(), counted.get())
    }

    #[test]
    fn one_round_trip_unless_the_exact_filter_drops_some() {
        assert_eq!(run(3, 100, 1), (vec!["0".into(), "1".into(), "2".into()], vec![3], 0));
        // Fewer candidates than k: the server's short answer ends it, uncounted.
        assert_eq!(run(5, 2, 1), (vec!["0".into(), "1".into()], vec![5], 0));
        // Every third passes: counted once, widened x4 until k pass.
        assert_eq!(run(3, 100, 3), (vec!["0".into(), "3".into(), "6".into()], vec![3, 12], 1));
        // Not enough anywhere: widened up to every candidate, then what there is.
        let (ids, asked, counted) = run(3, 10, 7);
        assert_eq!((ids, asked, counted), (vec!["0".into(), "7".into()], vec![3, 10], 1));
        assert_eq!(run(0, 10, 1), (vec![], vec![], 0));
    }
}

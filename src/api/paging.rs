//! Paged listings: one page-token codec for all of them, and the event cursor.
//!
//! A page token holds where the last page ended and a hash of the filter it was issued for (the
//! listing's name and its request without the page fields). A token sent back with another
//! filter is refused with INVALID_ARGUMENT on the token's field, instead of silently skipping or
//! repeating rows; the page size may change from page to page.
//!
//! The event cursor is not a page token: it is a position in the event outbox that holds for
//! every filter (ListEvents and WatchEvents take each other's, as the proto says), so it carries
//! no filter.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Status;

use super::error::invalid_field;

/// What a token carries.
#[derive(Serialize, Deserialize)]
struct Token<P> {
    /// Where the last page ended, in the listing's own order.
    at: P,
    /// The hash of the filter the token was issued for.
    filter: String,
}

/// One page of a listing: its size, where it starts, and the filter its next token is bound to.
pub(crate) struct Page<P> {
    pub size: u32,
    /// The position the page starts after; None for the first page.
    pub after: Option<P>,
    filter: String,
}

impl<P: Serialize + DeserializeOwned> Page<P> {
    /// Reads the token `raw` (from the request field `field`) of the listing `listing` whose
    /// request, without its page token and size, is `filter`.
    pub(crate) fn read(
        field: &'static str,
        raw: &str,
        size: u32,
        listing: &str,
        filter: &impl Message,
    ) -> Result<Page<P>, Status> {
        let filter = filter_hash(listing, filter);
        let after = if raw.is_empty() {
            None
        } else {
            let token: Token<P> = URL_SAFE_NO_PAD
                .decode(raw)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(|| not_issued(field))?;
            if token.filter != filter {
                return Err(invalid_field(
                    field,
                    "was issued for a different filter; start again without a token",
                ));
            }
            Some(token.at)
        };
        Ok(Page {
            size,
            after,
            filter,
        })
    }

    /// Rows to ask the store for: one more than the page, which tells whether another follows.
    pub(crate) fn limit(&self) -> u32 {
        self.size + 1
    }

    /// Cuts `rows` (read with [`Page::limit`]) to the page and returns the next page's token:
    /// the position of its last row, empty on the last page.
    pub(crate) fn next<T>(&self, rows: &mut Vec<T>, position: impl FnOnce(&T) -> P) -> String {
        let more = rows.len() > self.size as usize;
        rows.truncate(self.size as usize);
        match (more, rows.last()) {
            (true, Some(last)) => {
                let token = Token {
                    at: position(last),
                    filter: self.filter.clone(),
                };
                // Serializing a position (numbers and strings) cannot fail.
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
            }
            _ => String::new(),
        }
    }
}

fn not_issued(field: &'static str) -> Status {
    invalid_field(field, "is not a token this server issued")
}

/// The first 64 bits of SHA-256 over the listing's name and the filter's encoding: enough to
/// tell filters apart, short enough to keep tokens small.
fn filter_hash(listing: &str, filter: &impl Message) -> String {
    let mut h = Sha256::new();
    h.update(listing.as_bytes());
    h.update([0]);
    h.update(filter.encode_to_vec());
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Prefix of event cursors.
const CURSOR_SCOPE: &str = "ev";

/// The cursor of the event `id`, opaque to the caller.
pub(crate) fn event_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_SCOPE}:{id}"))
}

/// Reads an event cursor from the request field `field`; None when `raw` is empty.
pub(crate) fn read_event_cursor(field: &'static str, raw: &str) -> Result<Option<i64>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.strip_prefix(CURSOR_SCOPE)?
                .strip_prefix(':')?
                .parse::<i64>()
                .ok()
        })
        .map(Some)
        .ok_or_else(|| not_issued(field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn filter(customer: &str) -> pb::ListCardsRequest {
        pb::ListCardsRequest {
            customer_id: customer.into(),
            ..Default::default()
        }
    }

    fn field_of(status: &Status) -> String {
        use tonic_types::StatusExt;
        status.get_details_bad_request().unwrap().field_violations[0]
            .field
            .clone()
    }

    #[test]
    fn a_token_continues_the_listing_and_filter_it_was_issued_for() {
        let first: Page<String> = Page::read("page_token", "", 2, "cards", &filter("a")).unwrap();
        assert_eq!((first.after.as_deref(), first.limit()), (None, 3));
        let mut rows = vec!["x".to_string(), "y".into(), "z".into()];
        let token = first.next(&mut rows, |r| r.clone());
        assert_eq!(rows, ["x", "y"], "cut to the page");
        let second: Page<String> =
            Page::read("page_token", &token, 50, "cards", &filter("a")).unwrap();
        assert_eq!(
            second.after.as_deref(),
            Some("y"),
            "the page size may change"
        );
        let mut last = vec!["z".to_string()];
        assert_eq!(
            second.next(&mut last, |r| r.clone()),
            "",
            "no token on the last page"
        );
    }

    #[test]
    fn a_token_with_another_filter_or_listing_or_of_no_server_is_refused_on_its_field() {
        let page: Page<i64> = Page::read("page_token", "", 1, "cards", &filter("a")).unwrap();
        let token = page.next(&mut vec![1, 2], |r| *r);
        for (listing, f) in [("cards", filter("b")), ("pools", filter("a"))] {
            let err = Page::<i64>::read("page_token", &token, 1, listing, &f)
                .err()
                .unwrap();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(
                err.message().contains("different filter"),
                "{}",
                err.message()
            );
            assert_eq!(field_of(&err), "page_token");
        }
        let err = Page::<i64>::read("results_page_token", "garbage!", 1, "x", &filter("a"))
            .err()
            .unwrap();
        assert_eq!(field_of(&err), "results_page_token");
        let wrong_type = Page::<String>::read("page_token", &token, 1, "cards", &filter("a"));
        assert!(
            wrong_type.is_err(),
            "a position of another shape is not this listing's"
        );
    }

    #[test]
    fn an_event_cursor_reads_back_and_garbage_is_refused() {
        assert_eq!(
            read_event_cursor("after_cursor", &event_cursor(42)).unwrap(),
            Some(42)
        );
        assert_eq!(read_event_cursor("after_cursor", "").unwrap(), None);
        let err = read_event_cursor("page_token", "not-a-cursor").unwrap_err();
        assert_eq!(field_of(&err), "page_token");
    }
}

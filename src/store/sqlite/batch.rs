//! Multi-row statements: a batch of rows (submitted jobs, attempt records) is written a few
//! `INSERT`s at a time, cut into chunks of power-of-two sizes, so only a few statement shapes
//! are ever prepared and cached.

/// Rows one multi-row `INSERT` writes at most. A statement costs about as much to start and
/// end (a cursor on every index, a statement journal) as to write a few rows, so submitted
/// jobs and attempt records are inserted many rows per statement. Batches are cut into chunks
/// of power-of-two sizes, so only a few statement shapes are ever prepared and cached.
/// (An `UPDATE ... FROM (VALUES ...)` for many finished jobs measured no cheaper than one
/// guarded `UPDATE` each: SQLite stages such an update's rows in a temporary table.)
pub(super) const ROWS_PER_STATEMENT: usize = 64;

/// The chunk sizes for `n` rows: powers of two, largest first, none above
/// `ROWS_PER_STATEMENT` (100 -> 64, 32, 4).
pub(super) fn chunk_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= ROWS_PER_STATEMENT {
            ROWS_PER_STATEMENT
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        n -= size;
        Some(size)
    })
}

/// `items` cut as `chunk_sizes` says, one slice per statement.
pub(super) fn statement_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    chunk_sizes(items.len()).map(move |size| {
        let (chunk, after) = rest.split_at(size);
        rest = after;
        chunk
    })
}

/// The SQL of one kind of multi-row statement for each chunk size, made once.
pub(super) struct BatchSql {
    sizes: std::sync::OnceLock<Vec<String>>,
    make: fn(usize) -> String,
}

impl BatchSql {
    pub(super) const fn new(make: fn(usize) -> String) -> Self {
        Self {
            sizes: std::sync::OnceLock::new(),
            make,
        }
    }

    /// The statement for `rows` rows, one of `chunk_sizes`.
    pub(super) fn get(&self, rows: usize) -> &str {
        assert!(rows.is_power_of_two() && rows <= ROWS_PER_STATEMENT);
        let all = self.sizes.get_or_init(|| {
            (0..=ROWS_PER_STATEMENT.trailing_zeros())
                .map(|k| (self.make)(1 << k))
                .collect()
        });
        &all[rows.trailing_zeros() as usize]
    }
}

/// `(?2, ?3), (?4, ?5)` for `rows` rows of `width` placeholders, numbered from `first`.
pub(super) fn values_rows(rows: usize, width: usize, first: usize) -> String {
    let mut sql = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("?{}", first + r * width + c));
        }
        sql.push(')');
    }
    sql
}

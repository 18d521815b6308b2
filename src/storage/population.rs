//! The seeded population's SQL (`families`, migration 0003).

use super::{Store, StoreError};
use sqlx::Row;

/// Rows per INSERT on SQLite (8 bound values a row, under SQLite's limit).
const FAMILY_ROWS_PER_INSERT: usize = 1000;

/// One family as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyRow {
    /// KK number.
    pub kk: u64,
    /// NIK of the head of family.
    pub nik: String,
    /// Bank code.
    pub bank: u16,
    /// BPS province code.
    pub province: u16,
    /// Enrolled in PKH.
    pub pkh: bool,
    /// Enrolled in BPNT.
    pub bpnt: bool,
    /// PKH members per component, `key=n` joined by `,` (zeros left out).
    pub components: String,
    /// The card number issued at seeding (clear digits: never log it).
    pub pan: String,
}

impl Store {
    /// Insert families (one transaction). Fails on a KK already stored.
    pub async fn put_families(&self, rows: &[FamilyRow]) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for chunk in rows.chunks(FAMILY_ROWS_PER_INSERT) {
                    let mut sql = String::with_capacity(40 + chunk.len() * 20);
                    sql.push_str("INSERT INTO families (kk, nik, bank, province, pkh, bpnt, components, pan) VALUES ");
                    for i in 0..chunk.len() {
                        sql.push_str(if i == 0 {
                            "(?,?,?,?,?,?,?,?)"
                        } else {
                            ",(?,?,?,?,?,?,?,?)"
                        });
                    }
                    let mut q = sqlx::query(&sql);
                    for r in chunk {
                        q = q
                            .bind(r.kk as i64)
                            .bind(&r.nik)
                            .bind(i64::from(r.bank))
                            .bind(i64::from(r.province))
                            .bind(i64::from(r.pkh))
                            .bind(i64::from(r.bpnt))
                            .bind(&r.components)
                            .bind(&r.pan);
                    }
                    q.persistent(false).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for chunk in rows.chunks(50_000) {
                    let kk: Vec<i64> = chunk.iter().map(|r| r.kk as i64).collect();
                    let nik: Vec<&str> = chunk.iter().map(|r| r.nik.as_str()).collect();
                    let bank: Vec<i32> = chunk.iter().map(|r| i32::from(r.bank)).collect();
                    let province: Vec<i16> = chunk.iter().map(|r| r.province as i16).collect();
                    let pkh: Vec<i16> = chunk.iter().map(|r| i16::from(r.pkh)).collect();
                    let bpnt: Vec<i16> = chunk.iter().map(|r| i16::from(r.bpnt)).collect();
                    let comp: Vec<&str> = chunk.iter().map(|r| r.components.as_str()).collect();
                    let pan: Vec<&str> = chunk.iter().map(|r| r.pan.as_str()).collect();
                    sqlx::query(
                        "INSERT INTO families (kk, nik, bank, province, pkh, bpnt, components, pan) \
                         SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int4[], $4::int2[], $5::int2[], $6::int2[], $7::text[], $8::text[])",
                    )
                    .bind(kk)
                    .bind(nik)
                    .bind(bank)
                    .bind(province)
                    .bind(pkh)
                    .bind(bpnt)
                    .bind(comp)
                    .bind(pan)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// How many families are stored.
    pub async fn family_count(&self) -> Result<u64, StoreError> {
        Ok(match self {
            Store::Sqlite(pool) => sqlx::query("SELECT COUNT(*) FROM families")
                .fetch_one(pool)
                .await?
                .get::<i64, _>(0) as u64,
            Store::Postgres(pool) => sqlx::query("SELECT COUNT(*) FROM families")
                .fetch_one(pool)
                .await?
                .get::<i64, _>(0) as u64,
        })
    }

    /// Every family, by KK.
    pub async fn families(&self) -> Result<Vec<FamilyRow>, StoreError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.families_page(after, 1 << 18).await?;
            let Some(last) = page.last() else {
                return Ok(all);
            };
            after = Some(last.kk);
            all.extend(page);
        }
    }

    /// Up to `limit` families by KK, from the first KK above `after` (from
    /// the first, without it): a wave of tens of millions reads them a page
    /// at a time.
    pub async fn families_page(
        &self,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<FamilyRow>, StoreError> {
        const SQL: &str =
            "SELECT kk, nik, bank, province, pkh, bpnt, components, pan FROM families \
             WHERE kk > $1 ORDER BY kk LIMIT $2";
        // KKs are 16-digit numbers, so -1 is below every one of them.
        let after = after.map_or(-1, |k| k as i64);
        Ok(match self {
            Store::Sqlite(pool) => sqlx::query(SQL)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| FamilyRow {
                    kk: r.get::<i64, _>(0) as u64,
                    nik: r.get(1),
                    bank: r.get::<i64, _>(2) as u16,
                    province: r.get::<i64, _>(3) as u16,
                    pkh: r.get::<i64, _>(4) != 0,
                    bpnt: r.get::<i64, _>(5) != 0,
                    components: r.get(6),
                    pan: r.get(7),
                })
                .collect(),
            Store::Postgres(pool) => sqlx::query(SQL)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| FamilyRow {
                    kk: r.get::<i64, _>(0) as u64,
                    nik: r.get(1),
                    bank: r.get::<i32, _>(2) as u16,
                    province: r.get::<i16, _>(3) as u16,
                    pkh: r.get::<i16, _>(4) != 0,
                    bpnt: r.get::<i16, _>(5) != 0,
                    components: r.get(6),
                    pan: r.get(7),
                })
                .collect(),
        })
    }

    /// Like [`families_page`](Store::families_page), only the families
    /// enrolled in PKH (`pkh`) or BPNT (`!pkh`), and only what an
    /// entitlement needs: `nik` and `pan` come back empty, and `components`
    /// too for BPNT. A wave of tens of millions plans from these.
    pub async fn enrolled_page(
        &self,
        pkh: bool,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<FamilyRow>, StoreError> {
        let sql = if pkh {
            "SELECT kk, bank, pkh, bpnt, components FROM families \
             WHERE kk > $1 AND pkh = 1 ORDER BY kk LIMIT $2"
        } else {
            "SELECT kk, bank, pkh, bpnt, '' FROM families \
             WHERE kk > $1 AND bpnt = 1 ORDER BY kk LIMIT $2"
        };
        let after = after.map_or(-1, |k| k as i64);
        let row = |kk: i64, bank: u16, pkh: bool, bpnt: bool, components: String| FamilyRow {
            kk: kk as u64,
            nik: String::new(),
            bank,
            province: 0,
            pkh,
            bpnt,
            components,
            pan: String::new(),
        };
        Ok(match self {
            Store::Sqlite(pool) => sqlx::query(sql)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| {
                    row(
                        r.get(0),
                        r.get::<i64, _>(1) as u16,
                        r.get::<i64, _>(2) != 0,
                        r.get::<i64, _>(3) != 0,
                        r.get(4),
                    )
                })
                .collect(),
            Store::Postgres(pool) => sqlx::query(sql)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| {
                    row(
                        r.get(0),
                        r.get::<i32, _>(1) as u16,
                        r.get::<i16, _>(2) != 0,
                        r.get::<i16, _>(3) != 0,
                        r.get(4),
                    )
                })
                .collect(),
        })
    }

    /// How many families are enrolled in PKH (`pkh`) or BPNT.
    pub async fn enrolled_count(&self, pkh: bool) -> Result<u64, StoreError> {
        let sql = if pkh {
            "SELECT COUNT(*) FROM families WHERE pkh = 1"
        } else {
            "SELECT COUNT(*) FROM families WHERE bpnt = 1"
        };
        Ok(match self {
            Store::Sqlite(pool) => sqlx::query(sql).fetch_one(pool).await?.get::<i64, _>(0) as u64,
            Store::Postgres(pool) => {
                sqlx::query(sql).fetch_one(pool).await?.get::<i64, _>(0) as u64
            }
        })
    }
}

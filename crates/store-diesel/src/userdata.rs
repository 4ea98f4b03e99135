//! Preferences, saved items and API keys.

use billing_core::ports::StoreError;
use billing_core::records::{ApiKey, SavedItem};
use diesel::prelude::*;

use crate::db::{from_ts, parse_id, ts};
use crate::schema::{api_keys, saved_items};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = saved_items, treat_none_as_default_value = false)]
pub(crate) struct SavedItemRow {
    pub id: String,
    pub user_id: String,
    pub kind: String,
    pub title: Option<String>,
    pub content: String,
    pub metadata: String,
    pub created_at: i64,
}

impl SavedItemRow {
    pub(crate) fn from_domain(i: &SavedItem) -> Self {
        Self {
            id: i.id.clone(),
            user_id: i.user.to_string(),
            kind: i.kind.clone(),
            title: i.title.clone(),
            content: i.content.clone(),
            metadata: i.metadata.to_string(),
            created_at: ts(i.created_at),
        }
    }

    pub(crate) fn into_domain(self) -> Result<SavedItem, StoreError> {
        Ok(SavedItem {
            id: self.id,
            user: parse_id(&self.user_id)?,
            kind: self.kind,
            title: self.title,
            content: self.content,
            metadata: serde_json::from_str(&self.metadata)
                .map_err(|e| StoreError::Other(e.to_string()))?,
            created_at: from_ts(self.created_at),
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys, treat_none_as_default_value = false)]
pub(crate) struct ApiKeyRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl ApiKeyRow {
    pub(crate) fn from_domain(k: &ApiKey) -> Self {
        Self {
            id: k.id.to_string(),
            user_id: k.user.to_string(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            key_hash: k.key_hash.clone(),
            created_at: ts(k.created_at),
            revoked_at: k.revoked_at.map(ts),
        }
    }

    pub(crate) fn into_domain(self) -> Result<ApiKey, StoreError> {
        Ok(ApiKey {
            id: parse_id(&self.id)?,
            user: parse_id(&self.user_id)?,
            name: self.name,
            prefix: self.prefix,
            key_hash: self.key_hash,
            created_at: from_ts(self.created_at),
            revoked_at: self.revoked_at.map(from_ts),
        })
    }
}

/// Queries for a user's own data; stamped into `sql::pg` and `sql::sqlite`.
macro_rules! userdata_queries {
    () => {
        use crate::schema::{api_keys, saved_items, user_preferences};
        use crate::userdata::{ApiKeyRow, SavedItemRow};

        pub(crate) async fn preferences_get(
            c: &mut Conn,
            user: String,
        ) -> Result<Option<String>, TxError> {
            Ok(user_preferences::table
                .find(user)
                .select(user_preferences::data)
                .first(c)
                .await
                .optional()?)
        }

        pub(crate) async fn preferences_set(
            c: &mut Conn,
            user: String,
            data: String,
            now: i64,
        ) -> Result<(), TxError> {
            let changed = diesel::update(user_preferences::table.find(&user))
                .set((
                    user_preferences::data.eq(&data),
                    user_preferences::updated_at.eq(now),
                ))
                .execute(c)
                .await?;
            if changed == 0 {
                diesel::insert_into(user_preferences::table)
                    .values((
                        user_preferences::user_id.eq(&user),
                        user_preferences::data.eq(&data),
                        user_preferences::updated_at.eq(now),
                    ))
                    .execute(c)
                    .await?;
            }
            Ok(())
        }

        pub(crate) async fn item_save(c: &mut Conn, row: SavedItemRow) -> Result<(), TxError> {
            diesel::insert_into(saved_items::table)
                .values(&row)
                .execute(c)
                .await?;
            Ok(())
        }

        pub(crate) async fn items_list(
            c: &mut Conn,
            user: String,
            kind: Option<String>,
            after: Option<String>,
            limit: i64,
        ) -> Result<Vec<SavedItemRow>, TxError> {
            let mut query = saved_items::table
                .filter(saved_items::user_id.eq(user))
                .select(SavedItemRow::as_select())
                .into_boxed();
            if let Some(kind) = kind {
                query = query.filter(saved_items::kind.eq(kind));
            }
            if let Some(after) = after {
                query = query.filter(saved_items::id.lt(after));
            }
            Ok(query
                .order(saved_items::id.desc())
                .limit(limit)
                .load(c)
                .await?)
        }

        pub(crate) async fn item_get(
            c: &mut Conn,
            user: String,
            id: String,
        ) -> Result<Option<SavedItemRow>, TxError> {
            Ok(saved_items::table
                .find(id)
                .filter(saved_items::user_id.eq(user))
                .select(SavedItemRow::as_select())
                .first(c)
                .await
                .optional()?)
        }

        pub(crate) async fn item_delete(
            c: &mut Conn,
            user: String,
            id: String,
        ) -> Result<usize, TxError> {
            Ok(diesel::delete(
                saved_items::table
                    .find(id)
                    .filter(saved_items::user_id.eq(user)),
            )
            .execute(c)
            .await?)
        }

        pub(crate) async fn key_create(c: &mut Conn, row: ApiKeyRow) -> Result<(), TxError> {
            diesel::insert_into(api_keys::table)
                .values(&row)
                .execute(c)
                .await?;
            Ok(())
        }

        pub(crate) async fn keys_list(
            c: &mut Conn,
            user: String,
        ) -> Result<Vec<ApiKeyRow>, TxError> {
            Ok(api_keys::table
                .filter(api_keys::user_id.eq(user))
                .order(api_keys::id.desc())
                .select(ApiKeyRow::as_select())
                .load(c)
                .await?)
        }

        pub(crate) async fn key_live(
            c: &mut Conn,
            hash: String,
        ) -> Result<Option<ApiKeyRow>, TxError> {
            Ok(api_keys::table
                .filter(api_keys::key_hash.eq(hash))
                .filter(api_keys::revoked_at.is_null())
                .select(ApiKeyRow::as_select())
                .first(c)
                .await
                .optional()?)
        }

        pub(crate) async fn keys_revoke_user(
            c: &mut Conn,
            user: String,
            now: i64,
        ) -> Result<usize, TxError> {
            Ok(diesel::update(
                api_keys::table
                    .filter(api_keys::user_id.eq(user))
                    .filter(api_keys::revoked_at.is_null()),
            )
            .set(api_keys::revoked_at.eq(Some(now)))
            .execute(c)
            .await?)
        }

        pub(crate) async fn key_revoke(
            c: &mut Conn,
            user: String,
            id: String,
            now: i64,
        ) -> Result<usize, TxError> {
            Ok(diesel::update(
                api_keys::table
                    .find(id)
                    .filter(api_keys::user_id.eq(user))
                    .filter(api_keys::revoked_at.is_null()),
            )
            .set(api_keys::revoked_at.eq(Some(now)))
            .execute(c)
            .await?)
        }
    };
}
pub(crate) use userdata_queries;

//! Accounts and users.

use billing_core::ports::StoreError;
use billing_core::records::{Account, Role, User};
use diesel::prelude::*;

use crate::db::{from_ts, parse_enum, parse_id, ts};
use crate::schema::{accounts, users};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts, treat_none_as_default_value = false)]
pub(crate) struct AccountRow {
    pub id: String,
    pub plan: String,
    pub debt: i64,
    pub created_at: i64,
}

impl AccountRow {
    pub(crate) fn into_domain(self) -> Result<Account, StoreError> {
        Ok(Account {
            id: parse_id(&self.id)?,
            plan: self.plan,
            created_at: from_ts(self.created_at),
        })
    }
}

#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users, treat_none_as_default_value = false)]
pub(crate) struct UserRow {
    pub id: String,
    pub account_id: String,
    pub email: String,
    pub name: Option<String>,
    pub role: String,
    pub email_verified: bool,
    pub password_hash: Option<String>,
    pub external_subject: Option<String>,
    pub created_at: i64,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl UserRow {
    pub(crate) fn from_domain(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            account_id: u.account.to_string(),
            email: u.email.to_lowercase(),
            name: u.name.clone(),
            role: match u.role {
                Role::User => "user".into(),
                Role::Admin => "admin".into(),
            },
            email_verified: u.email_verified,
            password_hash: u.password_hash.clone(),
            external_subject: u.external_subject.clone(),
            created_at: ts(u.created_at),
        }
    }

    pub(crate) fn into_domain(self) -> Result<User, StoreError> {
        Ok(User {
            id: parse_id(&self.id)?,
            account: parse_id(&self.account_id)?,
            email: self.email,
            name: self.name,
            role: parse_enum(&self.role)?,
            email_verified: self.email_verified,
            password_hash: self.password_hash,
            external_subject: self.external_subject,
            created_at: from_ts(self.created_at),
        })
    }
}

/// Escapes `%`, `_` and `\` for a LIKE pattern.
pub(crate) fn like_pattern(search: &str) -> String {
    let mut out = String::from("%");
    for ch in search.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

/// Account and user queries; stamped into `sql::pg` and `sql::sqlite`.
macro_rules! account_queries {
    () => {
        use crate::accounts::{AccountRow, UserRow};
        use crate::schema::users;

        pub(crate) async fn account_create(
            c: &mut Conn,
            account: AccountRow,
            user: UserRow,
        ) -> Result<(), TxError> {
            diesel::insert_into(accounts::table)
                .values(&account)
                .execute(c)
                .await?;
            diesel::insert_into(users::table)
                .values(&user)
                .execute(c)
                .await?;
            Ok(())
        }

        pub(crate) async fn account_get(
            c: &mut Conn,
            id: String,
        ) -> Result<Option<AccountRow>, TxError> {
            Ok(accounts::table
                .find(id)
                .select(AccountRow::as_select())
                .first(c)
                .await
                .optional()?)
        }

        pub(crate) async fn account_set_plan(
            c: &mut Conn,
            id: String,
            plan: String,
        ) -> Result<usize, TxError> {
            Ok(diesel::update(accounts::table.find(id))
                .set(accounts::plan.eq(plan))
                .execute(c)
                .await?)
        }

        /// Served by the unique index on (account, reference) of period-allowance grants.
        pub(crate) async fn accounts_due_allowance(
            c: &mut Conn,
            plan: String,
            reference: String,
            after: Option<String>,
            limit: i64,
        ) -> Result<Vec<String>, TxError> {
            use crate::schema::grants;
            use diesel::dsl::{exists, not};
            let granted = grants::table
                .filter(grants::account_id.eq(accounts::id))
                .filter(grants::source.eq("period_allowance"))
                .filter(grants::reference.eq(reference));
            let mut query = accounts::table
                .filter(accounts::plan.eq(plan))
                .filter(not(exists(granted)))
                .into_boxed();
            if let Some(after) = after {
                query = query.filter(accounts::id.gt(after));
            }
            Ok(query
                .order(accounts::id.asc())
                .limit(limit)
                .select(accounts::id)
                .load(c)
                .await?)
        }

        pub(crate) async fn account_ids(
            c: &mut Conn,
            after: Option<String>,
            limit: i64,
        ) -> Result<Vec<(String, String)>, TxError> {
            let mut query = accounts::table.into_boxed();
            if let Some(after) = after {
                query = query.filter(accounts::id.gt(after));
            }
            Ok(query
                .order(accounts::id.asc())
                .limit(limit)
                .select((accounts::id, accounts::plan))
                .load(c)
                .await?)
        }

        pub(crate) async fn user_by(
            c: &mut Conn,
            field: UserField,
            value: String,
        ) -> Result<Option<UserRow>, TxError> {
            let query = users::table.select(UserRow::as_select()).into_boxed();
            let query = match field {
                UserField::Id => query.filter(users::id.eq(value)),
                UserField::Email => query.filter(users::email.eq(value.to_lowercase())),
                UserField::Subject => query.filter(users::external_subject.eq(value)),
            };
            Ok(query.first(c).await.optional()?)
        }

        pub(crate) async fn user_update(c: &mut Conn, user: UserRow) -> Result<usize, TxError> {
            Ok(diesel::update(users::table.find(user.id.clone()))
                .set((
                    users::email.eq(user.email),
                    users::name.eq(user.name),
                    users::role.eq(user.role),
                    users::email_verified.eq(user.email_verified),
                    users::password_hash.eq(user.password_hash),
                    users::external_subject.eq(user.external_subject),
                ))
                .execute(c)
                .await?)
        }

        pub(crate) async fn user_password_swap(
            c: &mut Conn,
            user: String,
            expected: String,
            new: String,
        ) -> Result<usize, TxError> {
            Ok(diesel::update(
                users::table
                    .find(user)
                    .filter(users::password_hash.eq(expected)),
            )
            .set(users::password_hash.eq(new))
            .execute(c)
            .await?)
        }

        pub(crate) async fn users_list(
            c: &mut Conn,
            search: Option<String>,
            after: Option<String>,
            limit: i64,
        ) -> Result<Vec<UserRow>, TxError> {
            let mut query = users::table.select(UserRow::as_select()).into_boxed();
            if let Some(search) = search.filter(|s| !s.trim().is_empty()) {
                let pattern = crate::accounts::like_pattern(search.trim());
                query = query.filter(
                    users::email
                        .like(pattern.clone())
                        .escape('\\')
                        .or(crate::accounts::lower(users::name)
                            .like(pattern)
                            .escape('\\')),
                );
            }
            if let Some(after) = after {
                query = query.filter(users::id.lt(after));
            }
            Ok(query.order(users::id.desc()).limit(limit).load(c).await?)
        }

        pub(crate) async fn users_of_account(
            c: &mut Conn,
            account: String,
        ) -> Result<Vec<UserRow>, TxError> {
            Ok(users::table
                .filter(users::account_id.eq(account))
                .select(UserRow::as_select())
                .order(users::id.asc())
                .load(c)
                .await?)
        }
    };
}
pub(crate) use account_queries;

diesel::define_sql_function! {
    /// SQL `lower()`, the same on PostgreSQL and SQLite.
    fn lower(text: diesel::sql_types::Nullable<diesel::sql_types::Text>) -> diesel::sql_types::Nullable<diesel::sql_types::Text>;
}

/// Which column a user is looked up by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UserField {
    Id,
    Email,
    Subject,
}

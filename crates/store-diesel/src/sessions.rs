//! Refresh tokens (sessions), stored hashed.

/// Session queries; stamped into `sql::pg` and `sql::sqlite`.
macro_rules! session_queries {
    () => {
        use crate::schema::refresh_tokens;

        /// A new token row.
        pub(crate) async fn session_issue(
            c: &mut Conn,
            token: billing_core::records::RefreshToken,
        ) -> Result<(), TxError> {
            diesel::insert_into(refresh_tokens::table)
                .values((
                    refresh_tokens::id.eq(token.id),
                    refresh_tokens::user_id.eq(token.user.to_string()),
                    refresh_tokens::family.eq(token.family),
                    refresh_tokens::token_hash.eq(token.token_hash),
                    refresh_tokens::expires_at.eq(crate::db::ts(token.expires_at)),
                    refresh_tokens::created_at.eq(crate::db::ts(token.created_at)),
                ))
                .execute(c)
                .await?;
            Ok(())
        }

        async fn session_revoke_family(
            c: &mut Conn,
            family: &str,
            now: i64,
        ) -> Result<(), TxError> {
            diesel::update(
                refresh_tokens::table
                    .filter(refresh_tokens::family.eq(family))
                    .filter(refresh_tokens::revoked_at.is_null()),
            )
            .set(refresh_tokens::revoked_at.eq(Some(now)))
            .execute(c)
            .await?;
            Ok(())
        }

        /// Uses up a current token and stores its successor; detects reuse.
        pub(crate) async fn session_rotate(
            c: &mut Conn,
            presented_hash: String,
            mut next: billing_core::records::RefreshToken,
            now: i64,
        ) -> Result<billing_core::records::Rotation, TxError> {
            use billing_core::records::Rotation;
            let row: Option<(String, String, String, i64, Option<i64>, Option<i64>)> =
                refresh_tokens::table
                    .filter(refresh_tokens::token_hash.eq(&presented_hash))
                    .select((
                        refresh_tokens::id,
                        refresh_tokens::user_id,
                        refresh_tokens::family,
                        refresh_tokens::expires_at,
                        refresh_tokens::used_at,
                        refresh_tokens::revoked_at,
                    ))
                    .first(c)
                    .await
                    .optional()?;
            let Some((id, user, family, expires_at, used_at, revoked_at)) = row else {
                return Ok(Rotation::Invalid);
            };
            let user: billing_core::ids::UserId =
                crate::db::parse_id(&user).map_err(TxError::Store)?;
            if revoked_at.is_some() {
                return Ok(Rotation::Invalid);
            }
            if used_at.is_some() {
                session_revoke_family(c, &family, now).await?;
                return Ok(Rotation::Reused { user, family });
            }
            if expires_at <= now {
                return Ok(Rotation::Invalid);
            }
            // Of two concurrent rotations only one finds it unused.
            let claimed = diesel::update(
                refresh_tokens::table
                    .find(&id)
                    .filter(refresh_tokens::used_at.is_null()),
            )
            .set(refresh_tokens::used_at.eq(Some(now)))
            .execute(c)
            .await?;
            if claimed != 1 {
                session_revoke_family(c, &family, now).await?;
                return Ok(Rotation::Reused { user, family });
            }
            next.family = family.clone();
            next.user = user.clone();
            session_issue(c, next).await?;
            Ok(Rotation::Rotated { user, family })
        }

        pub(crate) async fn session_revoke_family_of(
            c: &mut Conn,
            token_hash: String,
            now: i64,
        ) -> Result<Option<String>, TxError> {
            let family: Option<String> = refresh_tokens::table
                .filter(refresh_tokens::token_hash.eq(&token_hash))
                .select(refresh_tokens::family)
                .first(c)
                .await
                .optional()?;
            match family {
                Some(family) => {
                    session_revoke_family(c, &family, now).await?;
                    Ok(Some(family))
                }
                None => Ok(None),
            }
        }

        pub(crate) async fn session_revoke_user(
            c: &mut Conn,
            user: String,
            now: i64,
        ) -> Result<(), TxError> {
            diesel::update(
                refresh_tokens::table
                    .filter(refresh_tokens::user_id.eq(user))
                    .filter(refresh_tokens::revoked_at.is_null()),
            )
            .set(refresh_tokens::revoked_at.eq(Some(now)))
            .execute(c)
            .await?;
            Ok(())
        }

        /// The user and current role of a sign-in that is still live (a token of its
        /// family not revoked).
        pub(crate) async fn session_live(
            c: &mut Conn,
            family: String,
        ) -> Result<Option<(String, String)>, TxError> {
            use crate::schema::users;
            Ok(refresh_tokens::table
                .inner_join(users::table)
                .filter(refresh_tokens::family.eq(family))
                .filter(refresh_tokens::revoked_at.is_null())
                .select((users::id, users::role))
                .first(c)
                .await
                .optional()?)
        }

        /// Uses up every outstanding single-use token of a user for a purpose.
        pub(crate) async fn one_time_revoke(
            c: &mut Conn,
            user: String,
            purpose: String,
            now: i64,
        ) -> Result<(), TxError> {
            use crate::schema::one_time_tokens as ott;
            diesel::update(
                ott::table
                    .filter(ott::user_id.eq(user))
                    .filter(ott::purpose.eq(purpose))
                    .filter(ott::used_at.is_null()),
            )
            .set(ott::used_at.eq(Some(now)))
            .execute(c)
            .await?;
            Ok(())
        }

        pub(crate) async fn one_time_issue(
            c: &mut Conn,
            id: String,
            user: String,
            purpose: String,
            hash: String,
            expires_at: i64,
            now: i64,
        ) -> Result<(), TxError> {
            use crate::schema::one_time_tokens as ott;
            diesel::insert_into(ott::table)
                .values((
                    ott::id.eq(id),
                    ott::user_id.eq(user),
                    ott::purpose.eq(purpose),
                    ott::token_hash.eq(hash),
                    ott::expires_at.eq(expires_at),
                    ott::created_at.eq(now),
                ))
                .execute(c)
                .await?;
            Ok(())
        }

        pub(crate) async fn one_time_consume(
            c: &mut Conn,
            hash: String,
            purpose: String,
            now: i64,
        ) -> Result<Option<String>, TxError> {
            use crate::schema::one_time_tokens as ott;
            let found: Option<(String, String)> = ott::table
                .filter(ott::token_hash.eq(&hash))
                .filter(ott::purpose.eq(&purpose))
                .filter(ott::used_at.is_null())
                .filter(ott::expires_at.gt(now))
                .select((ott::id, ott::user_id))
                .first(c)
                .await
                .optional()?;
            let Some((id, user)) = found else {
                return Ok(None);
            };
            let claimed = diesel::update(ott::table.find(&id).filter(ott::used_at.is_null()))
                .set(ott::used_at.eq(Some(now)))
                .execute(c)
                .await?;
            Ok((claimed == 1).then_some(user))
        }
    };
}
pub(crate) use session_queries;

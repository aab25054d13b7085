//! `GET /aggregate/{class}`: Parse's aggregate pipelines and `distinct`,
//! evaluated over the class's objects the same way on every store.

use oxbase_store::aggregate::{AggregateError, AggregateKind, AggregateRequest, distinct};
use oxbase_store::{Filter, Object, Query};
use serde_json::{Map, Value, json};

use crate::App;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, code};
use crate::query::WhereParser;
use crate::request::ParseRequest;
use crate::routes::Reply;

/// The most objects one aggregation reads: the pipeline runs in memory.
const MAX_INPUT_OBJECTS: usize = 500_000;

impl App {
    pub(crate) async fn aggregate_route(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        class_name: &str,
    ) -> ApiResult<Reply> {
        auth.require_master()?;
        if auth.read_only {
            return Err(ApiError::new(
                code::OPERATION_FORBIDDEN,
                "Cannot run an aggregation pipeline when using the readOnlyMasterKey",
            ));
        }
        let request = AggregateRequest::parse(&req.params).map_err(aggregate_error)?;
        let results = match request.kind {
            AggregateKind::Distinct {
                field,
                where_clause,
            } => {
                let filter = self.where_filter(&where_clause)?;
                let objects = self.aggregate_input(class_name, filter).await?;
                distinct(&field, &objects).map_err(aggregate_error)?
            }
            AggregateKind::Pipeline(pipeline) => {
                // Leading `$match` stages become the store query when they
                // are Parse queries, so only matching objects are read.
                let (matches, rest) = pipeline.clone().split_leading_matches();
                let pushed = matches
                    .iter()
                    .map(|m| self.where_filter(m))
                    .collect::<ApiResult<Vec<Filter>>>();
                let (filter, pipeline) = match pushed {
                    Ok(filters) => (filters.into_iter().fold(Filter::All, Filter::and), rest),
                    Err(_) => (Filter::All, pipeline),
                };
                let objects = self.aggregate_input(class_name, filter).await?;
                pipeline
                    .run(objects)
                    .map_err(aggregate_error)?
                    .into_iter()
                    .map(Value::Object)
                    .collect()
            }
        };
        Ok(Reply::ok(json!({ "results": results })))
    }

    fn where_filter(&self, clause: &Map<String, Value>) -> ApiResult<Filter> {
        WhereParser::new(self.db.limits()).parse(&Value::Object(clause.clone()))
    }

    /// The class's objects that match `filter`; none for a class that does
    /// not exist, as Parse Server answers.
    async fn aggregate_input(&self, class_name: &str, filter: Filter) -> ApiResult<Vec<Object>> {
        let query = Query::new(class_name)
            .filter(filter)
            .limit(MAX_INPUT_OBJECTS + 1);
        let objects = self.db.find_raw(&query).await?;
        if objects.len() > MAX_INPUT_OBJECTS {
            return Err(ApiError::query(format!(
                "An aggregation may read at most {MAX_INPUT_OBJECTS} objects; add a $match first."
            )));
        }
        Ok(objects)
    }
}

fn aggregate_error(err: AggregateError) -> ApiError {
    ApiError::new(err.code(), err.to_string())
}
